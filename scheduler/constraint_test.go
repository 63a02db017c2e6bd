package scheduler

import (
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestParseConstraint(t *testing.T) {
	tests := []struct {
		expr    string
		want    Constraint
		wantErr string // substring; "" means success
	}{
		{expr: "node.role==manager", want: Constraint{"node.role", "==", "manager"}},
		{expr: "node.role != Worker", want: Constraint{"node.role", "!=", "worker"}},
		{expr: "node.id==abc", want: Constraint{"node.id", "==", "abc"}},
		{expr: "node.name==web-1", want: Constraint{"node.name", "==", "web-1"}},
		{expr: "node.hostname!=h1", want: Constraint{"node.hostname", "!=", "h1"}},
		{expr: "node.platform.os==linux", want: Constraint{"node.platform.os", "==", "linux"}},
		{expr: "node.platform.arch==amd64", want: Constraint{"node.platform.arch", "==", "amd64"}},
		{expr: "Node.Platform.Arch==amd64", want: Constraint{"node.platform.arch", "==", "amd64"}},
		{expr: "node.labels.zone==a", want: Constraint{"node.labels.zone", "==", "a"}},
		{expr: "NODE.LABELS.Zone==a", want: Constraint{"node.labels.Zone", "==", "a"}},
		{expr: "node.labels.a.b==c d", want: Constraint{"node.labels.a.b", "==", "c d"}},
		// "!=" found first even though "==" occurs later is "more than one".
		{expr: "node.labels.x!=a==b", wantErr: `constraint "node.labels.x!=a==b": more than one operator`},
		{expr: "node.rol==x", wantErr: `constraint "node.rol==x": unknown key "node.rol" (want node.id, node.name, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.<label>)`},
		{expr: "node.role=manager", wantErr: `constraint "node.role=manager": expected "==" or "!="`},
		{expr: "", wantErr: `constraint "": expected "==" or "!="`},
		{expr: "node.role==", wantErr: `constraint "node.role==": empty value after "=="`},
		{expr: "node.role==  ", wantErr: "empty value"},
		{expr: "==manager", wantErr: `constraint "==manager": missing key before "=="`},
		{expr: "node.labels.==x", wantErr: `empty label name in "node.labels."`},
		{expr: "node.role==boss", wantErr: `node.role must be "manager" or "worker", got "boss"`},
		{expr: "labels.zone==a", wantErr: `unknown key "labels.zone"`},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			got, err := ParseConstraint(tt.expr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseConstraint(%q) error = %v, want one containing %q", tt.expr, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseConstraint(%q): %v", tt.expr, err)
			}
			if got != tt.want {
				t.Fatalf("ParseConstraint(%q) = %+v, want %+v", tt.expr, got, tt.want)
			}
		})
	}
}

func TestParseConstraints(t *testing.T) {
	got, err := ParseConstraints([]string{"node.role==worker", "node.labels.zone!=b"})
	if err != nil || len(got) != 2 || got[1].Key != "node.labels.zone" {
		t.Fatalf("ParseConstraints = %v, %v", got, err)
	}
	_, err = ParseConstraints([]string{"node.role==worker", "node.rol==x"})
	if err == nil || !strings.HasPrefix(err.Error(), `constraints[1]: constraint "node.rol==x": unknown key`) {
		t.Fatalf("error = %v, want it to name constraints[1]", err)
	}
	if got, err := ParseConstraints(nil); got != nil || err != nil {
		t.Fatalf("ParseConstraints(nil) = %v, %v", got, err)
	}
}

func TestConstraintMatch(t *testing.T) {
	n := &shoalv1.Node{
		Meta: &shoalv1.Meta{Id: "n1abc"},
		Spec: &shoalv1.NodeSpec{Name: "edge", Labels: map[string]string{"zone": "a", "ssd": "true"}},
		Description: &shoalv1.NodeDescription{
			Hostname: "Host-1", Os: "linux", Arch: "x86_64",
		},
		Role: shoalv1.NodeRole_NODE_ROLE_MANAGER,
	}
	unnamed := &shoalv1.Node{
		Meta:        &shoalv1.Meta{Id: "n2"},
		Description: &shoalv1.NodeDescription{Hostname: "host-2", Arch: "aarch64"},
		Role:        shoalv1.NodeRole_NODE_ROLE_WORKER,
	}
	tests := []struct {
		expr string
		node *shoalv1.Node
		want bool
	}{
		{"node.id==n1abc", n, true},
		{"node.id==N1ABC", n, false}, // ids are exact
		{"node.id!=n1abc", n, false},
		{"node.name==edge", n, true},
		{"node.name==EDGE", n, true},
		{"node.name==host-1", n, false}, // spec.name wins over the hostname
		{"node.name==host-2", unnamed, true},
		{"node.hostname==host-1", n, true},
		{"node.hostname!=host-1", unnamed, true},
		{"node.role==manager", n, true},
		{"node.role==worker", n, false},
		{"node.role==worker", unnamed, true},
		{"node.role!=manager", unnamed, true},
		{"node.platform.os==linux", n, true},
		{"node.platform.os==Linux", n, true},
		{"node.platform.os==linux", unnamed, false},
		{"node.platform.arch==amd64", n, true},
		{"node.platform.arch==x86_64", n, true},
		{"node.platform.arch==arm64", unnamed, true},
		{"node.platform.arch!=amd64", unnamed, true},
		{"node.labels.zone==a", n, true},
		{"node.labels.zone==A", n, false}, // label values are exact
		{"node.labels.zone!=a", n, false},
		{"node.labels.zone!=b", n, true},
		{"node.labels.zone==a", unnamed, false},
		{"node.labels.zone!=a", unnamed, true}, // absent label: != matches
		{"node.labels.Zone==a", n, false},      // label names are exact
	}
	for _, tt := range tests {
		c, err := ParseConstraint(tt.expr)
		if err != nil {
			t.Fatalf("ParseConstraint(%q): %v", tt.expr, err)
		}
		if got := c.Match(tt.node); got != tt.want {
			t.Errorf("%s on %s = %v, want %v", tt.expr, tt.node.GetMeta().GetId(), got, tt.want)
		}
	}
	if (Constraint{Key: "node.id", Op: "~", Value: "n1abc"}).Match(n) {
		t.Error("an unknown operator matched")
	}
	if (Constraint{Key: "node.id", Op: "==", Value: "x"}).String() != "node.id==x" {
		t.Error("String does not render the expression")
	}
}
