package scheduler

import (
	"fmt"
	"strings"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Constraint keys.
const (
	KeyNodeID       = "node.id"
	KeyNodeName     = "node.name"
	KeyNodeHostname = "node.hostname"
	KeyNodeRole     = "node.role"
	KeyPlatformOS   = "node.platform.os"
	KeyPlatformArch = "node.platform.arch"
	// KeyLabelPrefix is followed by a label name: node.labels.zone.
	KeyLabelPrefix = "node.labels."
)

// Constraint operators.
const (
	OpEqual    = "=="
	OpNotEqual = "!="
)

// validKeys is the list an unknown key's error offers.
const validKeys = "node.id, node.name, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.<label>"

var fixedKeys = map[string]bool{
	KeyNodeID: true, KeyNodeName: true, KeyNodeHostname: true, KeyNodeRole: true,
	KeyPlatformOS: true, KeyPlatformArch: true,
}

// Constraint is one parsed placement constraint, e.g. node.role==manager.
type Constraint struct {
	Key   string // a fixed key, or KeyLabelPrefix + label name
	Op    string // OpEqual or OpNotEqual
	Value string
}

// String renders the constraint as it is written.
func (c Constraint) String() string { return c.Key + c.Op + c.Value }

// ParseConstraint parses "KEY==VALUE" or "KEY!=VALUE" (spaces around the
// operator are allowed). Fixed keys are case-insensitive and come back in
// lower case; a label's name keeps its case. Errors name the expression.
func ParseConstraint(expr string) (Constraint, error) {
	fail := func(format string, args ...any) (Constraint, error) {
		return Constraint{}, fmt.Errorf("constraint %q: %s", expr, fmt.Sprintf(format, args...))
	}
	at, op := -1, ""
	for _, o := range []string{OpEqual, OpNotEqual} {
		if i := strings.Index(expr, o); i >= 0 && (at < 0 || i < at) {
			at, op = i, o
		}
	}
	if at < 0 {
		return fail("expected %q or %q", OpEqual, OpNotEqual)
	}
	key := strings.TrimSpace(expr[:at])
	value := strings.TrimSpace(expr[at+len(op):])
	if key == "" {
		return fail("missing key before %q", op)
	}
	if value == "" {
		return fail("empty value after %q", op)
	}
	if strings.Contains(value, OpEqual) || strings.Contains(value, OpNotEqual) {
		return fail("more than one operator")
	}
	lower := strings.ToLower(key)
	switch {
	case fixedKeys[lower]:
		key = lower
	case strings.HasPrefix(lower, KeyLabelPrefix):
		label := key[len(KeyLabelPrefix):]
		if label == "" {
			return fail("empty label name in %q", key)
		}
		key = KeyLabelPrefix + label
	default:
		return fail("unknown key %q (want %s)", key, validKeys)
	}
	if key == KeyNodeRole {
		v := strings.ToLower(value)
		if v != "manager" && v != "worker" {
			return fail(`node.role must be "manager" or "worker", got %q`, value)
		}
		value = v
	}
	return Constraint{Key: key, Op: op, Value: value}, nil
}

// ParseConstraints parses a list of expressions; an error names the index.
func ParseConstraints(exprs []string) ([]Constraint, error) {
	if len(exprs) == 0 {
		return nil, nil
	}
	out := make([]Constraint, 0, len(exprs))
	for i, e := range exprs {
		c, err := ParseConstraint(e)
		if err != nil {
			return nil, fmt.Errorf("constraints[%d]: %w", i, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Match reports whether the node satisfies the constraint. A "!=" on a label
// the node does not carry matches; an unknown operator matches nothing.
func (c Constraint) Match(n *shoalv1.Node) bool {
	var eq bool
	switch c.Key {
	case KeyNodeID:
		eq = n.GetMeta().GetId() == c.Value
	case KeyNodeName:
		name := n.GetSpec().GetName()
		if name == "" {
			name = n.GetDescription().GetHostname()
		}
		eq = strings.EqualFold(name, c.Value)
	case KeyNodeHostname:
		eq = strings.EqualFold(n.GetDescription().GetHostname(), c.Value)
	case KeyNodeRole:
		eq = strings.EqualFold(roleName(n.GetRole()), c.Value)
	case KeyPlatformOS:
		eq = strings.EqualFold(n.GetDescription().GetOs(), c.Value)
	case KeyPlatformArch:
		eq = normalizeArch(n.GetDescription().GetArch()) == normalizeArch(c.Value)
	default:
		if label, ok := strings.CutPrefix(c.Key, KeyLabelPrefix); ok {
			v, has := n.GetSpec().GetLabels()[label]
			eq = has && v == c.Value
		}
	}
	switch c.Op {
	case OpEqual:
		return eq
	case OpNotEqual:
		return !eq
	}
	return false
}

// matchAll reports whether every constraint matches the node.
func matchAll(cs []Constraint, n *shoalv1.Node) bool {
	for _, c := range cs {
		if !c.Match(n) {
			return false
		}
	}
	return true
}

func roleName(r shoalv1.NodeRole) string {
	switch r {
	case shoalv1.NodeRole_NODE_ROLE_MANAGER:
		return "manager"
	case shoalv1.NodeRole_NODE_ROLE_WORKER:
		return "worker"
	}
	return ""
}

// normalizeArch maps the names uname and engines use to Go's, so that
// node.platform.arch==amd64 matches a node reporting x86_64.
func normalizeArch(a string) string {
	a = strings.ToLower(a)
	switch a {
	case "x86_64", "x86-64":
		return "amd64"
	case "aarch64":
		return "arm64"
	case "i386", "i686":
		return "386"
	}
	return a
}
