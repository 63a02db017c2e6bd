package specrules

import (
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// auto_rebalance is refused where the orchestrator would ignore it.
func TestAutoRebalanceRules(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*shoalv1.ServiceSpec)
		want   string
	}{
		{"replicated, spread", func(s *shoalv1.ServiceSpec) {}, ""},
		{"global", func(s *shoalv1.ServiceSpec) { s.Mode, s.Replicas = shoalv1.ServiceMode_SERVICE_MODE_GLOBAL, 0 },
			"spec.auto_rebalance: only for replicated services, not global"},
		{"replicated-job", func(s *shoalv1.ServiceSpec) { s.Mode, s.Replicas = shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB, 0 },
			"spec.auto_rebalance: only for replicated services, not replicated-job"},
		{"binpack", func(s *shoalv1.ServiceSpec) { s.Task.Placement = &shoalv1.Placement{Strategy: "binpack"} },
			"spec.auto_rebalance: contradicts spec.task.placement.strategy binpack"},
	} {
		s := validService()
		s.AutoRebalance = true
		tc.mutate(s)
		err := Service(s).Err()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: unexpected error: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}
