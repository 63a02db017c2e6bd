package specrules

import (
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestPlacementRules(t *testing.T) {
	tests := []struct {
		name string
		pl   *shoalv1.Placement
		want []string // substrings of the error; none = valid
	}{
		{"nested spread and binpack", &shoalv1.Placement{Spread: []string{"node.labels.region", "spread=node.labels.zone"}, Strategy: "binpack"}, nil},
		{"spread strategy", &shoalv1.Placement{Strategy: "spread"}, nil},
		{"spread on a fixed key", &shoalv1.Placement{Spread: []string{"node.labels.zone", "node.hostname"}},
			[]string{`spec.task.placement.spread[1]: "node.hostname": want node.labels.<label>`}},
		{"spread without a label", &shoalv1.Placement{Spread: []string{"node.labels."}}, []string{"spec.task.placement.spread[0]"}},
		{"spread repeated", &shoalv1.Placement{Spread: []string{"node.labels.zone", "node.labels.rack", "spread=node.labels.zone"}},
			[]string{`spec.task.placement.spread[2]: "spread=node.labels.zone" repeats spec.task.placement.spread[0]`}},
		{"too many preferences", &shoalv1.Placement{Spread: []string{"node.labels.a", "node.labels.b", "node.labels.c", "node.labels.d", "node.labels.e", "node.labels.f", "node.labels.g", "node.labels.h", "node.labels.i"}},
			[]string{"spec.task.placement.spread: 9 preferences, at most 8"}},
		{"unknown strategy", &shoalv1.Placement{Strategy: "random"}, []string{`spec.task.placement.strategy: must be spread or binpack, got "random"`}},
		{"manager and worker", &shoalv1.Placement{Constraints: []string{"node.role==manager", "node.labels.zone==a", "node.role == worker"}},
			[]string{`spec.task.placement.constraints[2]: "node.role == worker" contradicts constraints[0] "node.role==manager": no node has two values of node.role`}},
		{"equal and not equal", &shoalv1.Placement{Constraints: []string{"node.labels.zone!=a", "node.labels.zone==a"}},
			[]string{`spec.task.placement.constraints[0]: "node.labels.zone!=a" contradicts constraints[1] "node.labels.zone==a": no node can match both`}},
		{"hostname compares case-insensitively", &shoalv1.Placement{Constraints: []string{"node.hostname==Box1", "NODE.HOSTNAME!=box1"}},
			[]string{"constraints[1]", "no node can match both"}},
		{"two ids", &shoalv1.Placement{Constraints: []string{"node.id==abc", "node.id==ABC"}}, []string{"constraints[1]", "two values of node.id"}},
		{"same constraint twice is fine", &shoalv1.Placement{Constraints: []string{"node.role==worker", "node.role==WORKER"}}, nil},
		{"architectures by their Go names", &shoalv1.Placement{Constraints: []string{"node.platform.arch==x86_64", "node.platform.arch==amd64"}}, nil},
		{"label names are case-sensitive", &shoalv1.Placement{Constraints: []string{"node.labels.Zone==a", "node.labels.zone==b"}}, nil},
		{"label values are case-sensitive", &shoalv1.Placement{Constraints: []string{"node.labels.zone==a", "node.labels.zone!=A"}}, nil},
		{"two exclusions are fine", &shoalv1.Placement{Constraints: []string{"node.labels.zone!=a", "node.labels.zone!=b"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validService()
			s.Task.Placement = tt.pl
			err := Service(s).Err()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want error containing %q, got nil", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
