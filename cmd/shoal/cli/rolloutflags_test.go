package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestRolloutFlags: the --update-*/--rollback-* flags fill the configs
// (swarm's defaults for what is not given on a new config, the stored
// values on update); no flag leaves the config alone; --force bumps the
// task's force_update.
func TestRolloutFlags(t *testing.T) {
	parse := func(update bool, spec *shoalv1.ServiceSpec, args ...string) *shoalv1.ServiceSpec {
		t.Helper()
		var f specFlags
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		f.bind(fs, update)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		if err := f.apply(fs, spec); err != nil {
			t.Fatal(err)
		}
		return spec
	}
	s := parse(false, &shoalv1.ServiceSpec{}, "--update-parallelism", "3", "--update-delay", "2s", "--update-order", "start-first",
		"--update-failure-action", "rollback", "--update-monitor", "1500ms", "--update-max-failure-ratio", "0.25", "--rollback-parallelism", "0")
	u, r := s.GetUpdate(), s.GetRollback()
	if u.GetParallelism() != 3 || u.GetDelayMs() != 2000 || u.GetOrder() != "start-first" || u.GetFailureAction() != "rollback" ||
		u.GetMonitorMs() != 1500 || u.GetMaxFailureRatio() != 0.25 {
		t.Fatalf("update config %v", u)
	}
	if r.GetParallelism() != 0 || r.GetOrder() != "stop-first" || r.GetFailureAction() != "pause" || r.GetMonitorMs() != 5000 {
		t.Fatalf("rollback config %v (defaults for what was not given)", r)
	}
	if s := parse(false, &shoalv1.ServiceSpec{}); s.GetUpdate() != nil || s.GetRollback() != nil {
		t.Fatal("configs set without a flag")
	}
	stored := func() *shoalv1.ServiceSpec {
		return &shoalv1.ServiceSpec{Task: &shoalv1.TaskSpec{ForceUpdate: 4, Container: &shoalv1.ContainerSpec{Image: "x"}},
			Update: &shoalv1.UpdateConfig{Parallelism: 5, Order: "start-first", FailureAction: "continue", MonitorMs: 100}}
	}
	s = parse(true, stored(), "--update-delay", "1s")
	if u := s.GetUpdate(); u.GetParallelism() != 5 || u.GetOrder() != "start-first" || u.GetDelayMs() != 1000 || u.GetFailureAction() != "continue" {
		t.Fatalf("update kept the stored config badly: %v", u)
	}
	if s.GetTask().GetForceUpdate() != 4 {
		t.Fatal("force_update changed without --force")
	}
	if s := parse(true, stored(), "--force"); s.GetTask().GetForceUpdate() != 5 {
		t.Fatalf("--force: force_update %d, want 5", s.GetTask().GetForceUpdate())
	}
}

// TestRolloutWatch: a wait that follows a rollout prints progress from the
// update status and ends on it: completed (success), paused (error with
// the message), rolled back by itself (error with the reason), and a
// manual rollback completed (success).
func TestRolloutWatch(t *testing.T) {
	svc := func(st shoalv1.UpdateState, updated int64, msg string) *shoalv1.Service {
		return &shoalv1.Service{Meta: &shoalv1.Meta{Id: "s"}, Spec: &shoalv1.ServiceSpec{Name: "web", Replicas: 3},
			UpdateStatus: &shoalv1.UpdateStatus{State: st, Updated: updated, Message: msg}}
	}
	const (
		upd = shoalv1.UpdateState_UPDATE_STATE_UPDATING
		pau = shoalv1.UpdateState_UPDATE_STATE_PAUSED
		com = shoalv1.UpdateState_UPDATE_STATE_COMPLETED
		rbs = shoalv1.UpdateState_UPDATE_STATE_ROLLBACK_STARTED
		rbc = shoalv1.UpdateState_UPDATE_STATE_ROLLBACK_COMPLETED
	)
	tests := []struct {
		name    string
		seq     []*shoalv1.Service
		out     []string
		wantErr string // "" = success
	}{
		{"completed", []*shoalv1.Service{svc(upd, 0, ""), svc(upd, 1, ""), svc(upd, 3, ""), svc(com, 3, "update completed")},
			[]string{"web: updating", "web: 1/3 updated", "web: 3/3 updated", "web: update completed (3/3 updated)"}, ""},
		{"paused", []*shoalv1.Service{svc(upd, 0, ""), svc(pau, 0, "update paused: 1 of 3 tasks failed: task x: exit code 1")},
			[]string{"web: updating"}, "web: update paused: 1 of 3 tasks failed: task x: exit code 1; a new spec or update config"},
		{"rolled back by itself", []*shoalv1.Service{svc(upd, 0, ""), svc(rbs, 0, "update rolled back: 1 of 3 tasks failed"), svc(rbc, 3, "rollback completed")},
			[]string{"web: rolling back: update rolled back: 1 of 3 tasks failed", "web: rollback completed"}, "web: update rolled back: 1 of 3 tasks failed"},
		{"manual rollback", []*shoalv1.Service{svc(rbs, 0, "manually requested rollback"), svc(rbc, 3, "rollback completed")},
			[]string{"web: rollback completed"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rw := newRolloutWatch(tt.seq[0])
			if !rw.on {
				t.Fatal("not following the rollout")
			}
			var out bytes.Buffer
			var end bool
			var err error
			for _, s := range tt.seq {
				if end {
					t.Fatal("ended before the last status")
				}
				end, err = rw.step(&out, s)
			}
			if !end {
				t.Fatal("did not end")
			}
			for _, l := range tt.out {
				if !strings.Contains(out.String(), l+"\n") {
					t.Errorf("output lacks %q:\n%s", l, out.String())
				}
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("error %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
	if newRolloutWatch(svc(com, 3, "")).on {
		t.Error("a write that started no rollout (status completed) is followed as one")
	}
}
