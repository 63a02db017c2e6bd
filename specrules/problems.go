package specrules

import (
	"fmt"
	"strings"
	"unicode/utf8"
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
// Strings among args are clipped (see clip): a refusal names what it
// refused without echoing a 70 KB value back.
func (p *Problems) Add(field, format string, args ...any) {
	for i, a := range args {
		if s, ok := a.(string); ok {
			args[i] = clip(s)
		}
	}
	*p = append(*p, Problem{Field: field, Reason: fmt.Sprintf(format, args...)})
}

// maxEcho is how much of a refused string an error repeats.
const maxEcho = 64

// clip shortens s for an error message: its first maxEcho bytes (cut at a
// rune boundary) and its length.
func clip(s string) string {
	if len(s) <= 2*maxEcho {
		return s
	}
	n := maxEcho
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return fmt.Sprintf("%s…(%d bytes)", s[:n], len(s))
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
