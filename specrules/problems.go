package specrules

import (
	"fmt"
	"strings"
)

// Problem is one broken rule: the field path and why.
type Problem struct {
	Field  string // e.g. "spec.task.container.env[3]"
	Reason string
}

func (p Problem) String() string { return p.Field + ": " + p.Reason }

// Problems is every rule a spec breaks, in field order. It is an error
// when not empty (see Err).
type Problems []Problem

// Add records that field breaks a rule.
func (p *Problems) Add(field, format string, args ...any) {
	*p = append(*p, Problem{Field: field, Reason: fmt.Sprintf(format, args...)})
}

// Error joins the problems with "; ".
func (p Problems) Error() string {
	s := make([]string, len(p))
	for i, pr := range p {
		s[i] = pr.String()
	}
	return strings.Join(s, "; ")
}

// Err is nil when there is no problem, else p itself.
func (p Problems) Err() error {
	if len(p) == 0 {
		return nil
	}
	return p
}
