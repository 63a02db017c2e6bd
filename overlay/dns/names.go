package dns

import (
	"fmt"
	"strings"
)

// ValidName checks a service name or network alias for use as a DNS
// name here: one or more labels of 1–63 characters from a–z, 0–9 and
// '-' (not first or last), at most 253 characters in all, and not of the
// form tasks.X (that namespace is the endpoint list). Upper case is
// accepted (names compare case-insensitively). For the spec rules of
// aliases and service names (the manager's validation may call it or
// copy it into specrules/).
func ValidName(name string) error {
	n := strings.ToLower(name)
	if n == "" || len(n) > 253 {
		return fmt.Errorf("name %q: must be 1 to 253 characters", name)
	}
	labels := strings.Split(n, ".")
	if len(labels) > 1 && labels[0] == "tasks" {
		return fmt.Errorf("name %q: tasks.NAME is reserved for the task list of a service", name)
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("name %q: each dot-separated label must be 1 to 63 characters", name)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("name %q: a label cannot start or end with '-'", name)
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("name %q: only letters, digits, '-' and '.' are allowed", name)
			}
		}
	}
	return nil
}
