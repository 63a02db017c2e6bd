package specrules

import (
	"math"
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestUpdateConfig(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(s *shoalv1.ServiceSpec)
		want   string // "" = valid
	}{
		{"parallelism 10, delay, start-first, rollback, monitor, ratio", func(s *shoalv1.ServiceSpec) {
			s.Update = &shoalv1.UpdateConfig{Parallelism: 10, DelayMs: 1000, Order: "start-first", FailureAction: "rollback", MonitorMs: 2000, MaxFailureRatio: 0.2}
			s.Rollback = &shoalv1.UpdateConfig{Parallelism: 0, FailureAction: "continue"}
		}, ""},
		{"all zero (defaults)", func(s *shoalv1.ServiceSpec) { s.Update = &shoalv1.UpdateConfig{} }, ""},
		{"negative parallelism", func(s *shoalv1.ServiceSpec) { s.Update.Parallelism = -1 }, "spec.update.parallelism: must be >= 0 (0: all at once), got -1"},
		{"negative delay", func(s *shoalv1.ServiceSpec) { s.Update.DelayMs = -5 }, "spec.update.delay_ms: must be >= 0, got -5"},
		{"huge monitor", func(s *shoalv1.ServiceSpec) { s.Rollback = &shoalv1.UpdateConfig{MonitorMs: MaxUpdateWait + 1} }, "spec.rollback.monitor_ms: must be at most 86400000"},
		{"negative monitor", func(s *shoalv1.ServiceSpec) { s.Update.MonitorMs = -1 }, "spec.update.monitor_ms: must be >= 0"},
		{"ratio above 1", func(s *shoalv1.ServiceSpec) { s.Update.MaxFailureRatio = 1.5 }, "spec.update.max_failure_ratio: must be between 0 and 1, got 1.5"},
		{"ratio negative", func(s *shoalv1.ServiceSpec) { s.Update.MaxFailureRatio = -0.1 }, "spec.update.max_failure_ratio: must be between 0 and 1"},
		{"ratio NaN", func(s *shoalv1.ServiceSpec) { s.Update.MaxFailureRatio = math.NaN() }, "spec.update.max_failure_ratio: must be between 0 and 1, got NaN"},
		{"unknown order", func(s *shoalv1.ServiceSpec) { s.Update.Order = "sideways" }, `spec.update.order: must be stop-first or start-first, got "sideways"`},
		{"unknown action", func(s *shoalv1.ServiceSpec) { s.Update.FailureAction = "panic" }, `spec.update.failure_action: must be pause, continue or rollback, got "panic"`},
		{"a rollback cannot roll back", func(s *shoalv1.ServiceSpec) { s.Rollback = &shoalv1.UpdateConfig{FailureAction: "rollback"} }, "spec.rollback.failure_action: a rollback that fails cannot roll back"},
		{"unknown rollback action", func(s *shoalv1.ServiceSpec) { s.Rollback = &shoalv1.UpdateConfig{FailureAction: "x"} }, `spec.rollback.failure_action: must be pause or continue, got "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validService()
			tt.mutate(s)
			err := Service(s).Err()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}
