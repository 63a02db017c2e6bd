package specrules

import (
	"fmt"
	"strings"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// MaxSpreadPreferences bounds placement.spread: each level of preference
// is a level of the scheduler's tree.
const MaxSpreadPreferences = 8

// placementRules checks what the scheduler cannot judge task by task:
// the spread preferences' syntax, the strategy, and constraints that
// contradict each other (no node could ever match them all). The syntax of
// each constraint is the scheduler's (the Control API parses them).
func placementRules(p *Problems, pf string, pl *shoalv1.Placement) {
	prefs := pl.GetSpread()
	if len(prefs) > MaxSpreadPreferences {
		p.Add(pf+".spread", "%d preferences, at most %d", len(prefs), MaxSpreadPreferences)
	}
	seen := map[string]int{}
	for i, pref := range prefs {
		f := fmt.Sprintf("%s.spread[%d]", pf, i)
		label, ok := SpreadLabel(pref)
		switch {
		case len(pref) > MaxConstraint:
			p.Add(f, "%d bytes long, at most %d", len(pref), MaxConstraint)
		case !ok:
			p.Add(f, "%q: want node.labels.<label> (spread over the values of a node label)", pref)
		default:
			if j, dup := seen[label]; dup {
				p.Add(f, "%q repeats %s.spread[%d]", pref, pf, j)
			}
			seen[label] = i
		}
	}
	switch s := pl.GetStrategy(); s {
	case "", "spread", "binpack":
	default:
		p.Add(pf+".strategy", "must be spread or binpack, got %q", s)
	}
	contradictions(p, pf, pl.GetConstraints())
}

// SpreadLabel reads "node.labels.<label>" (or the CLI's "spread=" form):
// the label a spread preference spreads over.
func SpreadLabel(pref string) (string, bool) {
	key := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(pref), "spread="))
	const prefix = "node.labels."
	if len(key) <= len(prefix) || !strings.EqualFold(key[:len(prefix)], prefix) {
		return "", false
	}
	return key[len(prefix):], true
}

// constraintTerm is a constraint reduced to what comparing two needs.
type constraintTerm struct {
	index      int
	key, value string
	equal      bool
}

// contradictions refuses constraints no node can satisfy together: two
// different values required for one key (node.role==manager and
// node.role==worker), or one value both required and excluded. Constraints
// that do not parse are left to the parser's error.
func contradictions(p *Problems, pf string, cs []string) {
	byKey := map[string][]constraintTerm{}
	var keys []string
	for i, c := range cs {
		t, ok := parseTerm(c)
		if !ok {
			continue
		}
		t.index = i
		if _, seen := byKey[t.key]; !seen {
			keys = append(keys, t.key)
		}
		byKey[t.key] = append(byKey[t.key], t)
	}
	for _, k := range keys {
		terms := byKey[k]
		var eq *constraintTerm
		for j := range terms {
			t := &terms[j]
			if !t.equal {
				continue
			}
			if eq != nil && eq.value != t.value {
				p.Add(fmt.Sprintf("%s.constraints[%d]", pf, t.index), "%q contradicts constraints[%d] %q: no node has two values of %s",
					cs[t.index], eq.index, cs[eq.index], k)
				continue
			}
			if eq == nil {
				eq = t
			}
		}
		if eq == nil {
			continue
		}
		for _, t := range terms {
			if !t.equal && t.value == eq.value {
				p.Add(fmt.Sprintf("%s.constraints[%d]", pf, t.index), "%q contradicts constraints[%d] %q: no node can match both",
					cs[t.index], eq.index, cs[eq.index])
			}
		}
	}
}

// parseTerm normalises a constraint the way the scheduler compares it:
// fixed keys case-insensitive; values case-insensitive except node.id and
// labels; architectures by their Go names.
func parseTerm(c string) (constraintTerm, bool) {
	at, op := -1, ""
	for _, o := range []string{"==", "!="} {
		if i := strings.Index(c, o); i >= 0 && (at < 0 || i < at) {
			at, op = i, o
		}
	}
	if at < 0 {
		return constraintTerm{}, false
	}
	key := strings.TrimSpace(c[:at])
	value := strings.TrimSpace(c[at+2:])
	if key == "" || value == "" {
		return constraintTerm{}, false
	}
	if lower := strings.ToLower(key); !strings.HasPrefix(lower, "node.labels.") {
		key = lower
		if key != "node.id" {
			value = strings.ToLower(value)
		}
		if key == "node.platform.arch" {
			switch value {
			case "x86_64", "x86-64":
				value = "amd64"
			case "aarch64":
				value = "arm64"
			case "i386", "i686":
				value = "386"
			}
		}
	} else {
		key = "node.labels." + key[len("node.labels."):]
	}
	return constraintTerm{key: key, value: value, equal: op == "=="}, true
}
