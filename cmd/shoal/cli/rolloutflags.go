package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// updateConfigFlags are the --update-* (or --rollback-*) flags of one
// UpdateConfig.
type updateConfigFlags struct {
	parallelism     int64
	delay, monitor  time.Duration
	order, action   string
	maxFailureRatio float64
}

// rolloutFlags are the rollout flags of create and update: the update
// and rollback configs, and update's --force.
type rolloutFlags struct {
	update, rollback updateConfigFlags
	force            bool
}

func (f *updateConfigFlags) bind(fs *pflag.FlagSet, prefix, what string) {
	fs.Int64Var(&f.parallelism, prefix+"-parallelism", 1, "tasks "+what+" at a time (0: all at once)")
	fs.DurationVar(&f.delay, prefix+"-delay", 0, "wait this long after a new task runs before the next task is "+what)
	fs.DurationVar(&f.monitor, prefix+"-monitor", 5*time.Second, "how long each new task must keep running (and healthy) to count as "+what+"; a failure within it counts as failed")
	fs.StringVar(&f.order, prefix+"-order", "stop-first", "stop-first (stop the old task, then start the new one) or start-first (the old one stops once the new one runs)")
	fs.Float64Var(&f.maxFailureRatio, prefix+"-max-failure-ratio", 0, "fraction of the tasks (0 to 1) that may fail before the failure action is taken")
}

// bindRolloutFlags adds the rollout flags to create (update false) or
// update.
func (f *rolloutFlags) bind(fs *pflag.FlagSet, update bool) {
	f.update.bind(fs, "update", "updated")
	fs.StringVar(&f.update.action, "update-failure-action", "pause", "what a failed update does: pause, continue or rollback")
	f.rollback.bind(fs, "rollback", "rolled back")
	fs.StringVar(&f.rollback.action, "rollback-failure-action", "pause", "what a failed rollback does: pause or continue")
	if update {
		fs.BoolVar(&f.force, "force", false, "redeploy every task even if nothing else changes")
	}
}

// apply writes the rollout flags that were given (all on create) into
// spec; the other fields of the stored config stay.
func (f *rolloutFlags) apply(fs *pflag.FlagSet, spec *shoalv1.ServiceSpec) {
	set := fs.Changed
	spec.Update = f.update.apply(set, "update", spec.Update)
	spec.Rollback = f.rollback.apply(set, "rollback", spec.Rollback)
	if f.force {
		if spec.Task == nil {
			spec.Task = &shoalv1.TaskSpec{}
		}
		spec.Task.ForceUpdate++
	}
}

func (f *updateConfigFlags) apply(set func(string) bool, prefix string, cur *shoalv1.UpdateConfig) *shoalv1.UpdateConfig {
	given := false
	for _, n := range []string{"parallelism", "delay", "monitor", "order", "max-failure-ratio", "failure-action"} {
		given = given || set(prefix+"-"+n)
	}
	if !given {
		return cur
	}
	u := &shoalv1.UpdateConfig{Parallelism: 1, Order: "stop-first", FailureAction: "pause", MonitorMs: 5000}
	if cur != nil {
		u = proto.Clone(cur).(*shoalv1.UpdateConfig)
	}
	if set(prefix + "-parallelism") {
		u.Parallelism = f.parallelism
	}
	if set(prefix + "-delay") {
		u.DelayMs = f.delay.Milliseconds()
	}
	if set(prefix + "-monitor") {
		u.MonitorMs = f.monitor.Milliseconds()
	}
	if set(prefix + "-order") {
		u.Order = f.order
	}
	if set(prefix + "-max-failure-ratio") {
		u.MaxFailureRatio = f.maxFailureRatio
	}
	if set(prefix + "-failure-action") {
		u.FailureAction = f.action
	}
	return u
}

// serviceRollback is `shoal service rollback NAME`: the previous spec
// comes back, rolled out under the rollback config, with progress.
func (a *app) serviceRollback() *cobra.Command {
	var wf waitFlags
	cmd := &cobra.Command{Use: "rollback [flags] SERVICE", Short: "Go back to a service's previous spec", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer cl.Close()
			ws, err := a.startWait(cmd.Context(), cl, wf)
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd.Context())
			defer cancel()
			resp, err := cl.Control.RollbackService(ctx, &shoalv1.RollbackServiceRequest{ServiceId: args[0]})
			if err != nil {
				ws.stop()
				return err
			}
			fmt.Fprintln(a.out, resp.GetService().GetSpec().GetName())
			return ws.wait(cmd.Context(), resp.GetService())
		}}
	wf.bind(cmd)
	return cmd
}

// rolloutWatch follows a service's rollout through its update status
// while a command waits: the orchestrator's status is what says when the
// rollout ends (completed, paused, rolled back), not the task count.
type rolloutWatch struct {
	on bool
	// manual: the wait follows `service rollback`, for which a completed
	// rollback is success.
	manual  bool
	state   shoalv1.UpdateState
	updated int64
	// why is the message of the last ROLLBACK_STARTED: the reason an
	// update was rolled back.
	why string
}

func newRolloutWatch(svc *shoalv1.Service) *rolloutWatch {
	st := svc.GetUpdateStatus().GetState()
	return &rolloutWatch{
		on:     st == shoalv1.UpdateState_UPDATE_STATE_UPDATING || st == shoalv1.UpdateState_UPDATE_STATE_ROLLBACK_STARTED,
		manual: st == shoalv1.UpdateState_UPDATE_STATE_ROLLBACK_STARTED,
		state:  shoalv1.UpdateState_UPDATE_STATE_UNKNOWN,
	}
}

// step prints the rollout's progress and reports whether the wait ends,
// with the error to exit with (nil once completed).
func (r *rolloutWatch) step(out io.Writer, svc *shoalv1.Service) (bool, error) {
	st := svc.GetUpdateStatus()
	name := svc.GetSpec().GetName()
	want := wantedTasks(svc)
	if st.GetState() != r.state {
		r.state = st.GetState()
		switch r.state {
		case shoalv1.UpdateState_UPDATE_STATE_ROLLBACK_STARTED:
			r.why = st.GetMessage()
			fmt.Fprintf(out, "%s: rolling back: %s\n", name, st.GetMessage())
		case shoalv1.UpdateState_UPDATE_STATE_UPDATING:
			fmt.Fprintf(out, "%s: updating\n", name)
		}
	}
	if st.GetUpdated() != r.updated {
		r.updated = st.GetUpdated()
		fmt.Fprintf(out, "%s: %d/%s updated\n", name, r.updated, want)
	}
	switch r.state {
	case shoalv1.UpdateState_UPDATE_STATE_COMPLETED:
		fmt.Fprintf(out, "%s: update completed (%d/%s updated)\n", name, st.GetUpdated(), want)
		return true, nil
	case shoalv1.UpdateState_UPDATE_STATE_PAUSED:
		return true, fmt.Errorf("%s: %s; a new spec or update config (`shoal service update --update-failure-action continue %s`) resumes it, `shoal service rollback %s` goes back",
			name, st.GetMessage(), name, name)
	case shoalv1.UpdateState_UPDATE_STATE_ROLLBACK_PAUSED:
		return true, fmt.Errorf("%s: %s; see `shoal service ps %s`", name, st.GetMessage(), name)
	case shoalv1.UpdateState_UPDATE_STATE_ROLLBACK_COMPLETED:
		fmt.Fprintf(out, "%s: rollback completed\n", name)
		if r.manual {
			return true, nil
		}
		why := r.why
		if why == "" {
			why = "rolled back"
		}
		return true, fmt.Errorf("%s: %s", name, why)
	}
	return false, nil
}

// wantedTasks is the replica count ("3"), or "all" for a global service.
func wantedTasks(svc *shoalv1.Service) string {
	if svc.GetSpec().GetMode() == shoalv1.ServiceMode_SERVICE_MODE_GLOBAL {
		return "all"
	}
	return fmt.Sprint(svc.GetSpec().GetReplicas())
}

// serviceEvent returns the newer service of svc and a service event about
// it.
func serviceEvent(svc *shoalv1.Service, ev *shoalv1.WatchEvent) *shoalv1.Service {
	s := ev.GetObject().GetService()
	if s == nil || s.GetMeta().GetId() != svc.GetMeta().GetId() || ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_DELETE ||
		s.GetMeta().GetVersion() < svc.GetMeta().GetVersion() {
		return svc
	}
	return s
}

// updateColumn is the UPDATE column of `service ls`: the state of the
// latest rollout ("updating 2/5", "paused", "rolled back"), "-" if none.
func updateColumn(svc *shoalv1.Service) string {
	st := svc.GetUpdateStatus()
	switch st.GetState() {
	case shoalv1.UpdateState_UPDATE_STATE_UPDATING:
		return fmt.Sprintf("updating %d/%s", st.GetUpdated(), wantedTasks(svc))
	case shoalv1.UpdateState_UPDATE_STATE_PAUSED:
		return "paused"
	case shoalv1.UpdateState_UPDATE_STATE_COMPLETED:
		return "completed"
	case shoalv1.UpdateState_UPDATE_STATE_ROLLBACK_STARTED:
		return fmt.Sprintf("rolling back %d/%s", st.GetUpdated(), wantedTasks(svc))
	case shoalv1.UpdateState_UPDATE_STATE_ROLLBACK_PAUSED:
		return "rollback paused"
	case shoalv1.UpdateState_UPDATE_STATE_ROLLBACK_COMPLETED:
		return "rolled back"
	}
	return "-"
}
