package orchestrator

import (
	"errors"
	"fmt"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

func jobStatusOf(s *raftstore.Store, id string) *shoalv1.JobStatus {
	svc, _ := raftstore.Get[*shoalv1.Service](s.View(), id)
	return svc.GetJobStatus()
}

// The loop over a real store: a replicated job of 3 completions, 2 at a
// time, runs to 3 COMPLETE tasks and no more; a failure is retried.
func TestJobRunsToCompletions(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1"))
	startOrchestrator(t, s)
	create(t, s, mkService("j", 0, job(3, 2)))

	eventually(t, "run 1 started with 2 tasks", func() error {
		live := liveOf(tasksOf(s, "j"))
		if jobStatusOf(s, "j").GetIteration() != 1 || len(live) != 2 {
			return fmt.Errorf("iteration %d, live %s", jobStatusOf(s, "j").GetIteration(), brief(live))
		}
		return allAssigned(live, 2)
	})
	report(t, s, func(tk *shoalv1.Task) bool { return tk.GetSlot() == 1 && isLive(tk) }, tsFailed)
	report(t, s, func(tk *shoalv1.Task) bool { return tk.GetSlot() == 2 && isLive(tk) }, tsComplete)
	// Slot 1 is retried, slot 3 starts: both live, assigned.
	eventually(t, "slot 1 retried and slot 3 started", func() error {
		live := liveOf(tasksOf(s, "j"))
		if len(live) != 2 {
			return fmt.Errorf("live %s", brief(live))
		}
		return allAssigned(live, 2)
	})
	report(t, s, func(tk *shoalv1.Task) bool { return isLive(tk) }, tsComplete)
	eventually(t, "3 completions, nothing live", func() error {
		n := 0
		for _, tk := range tasksOf(s, "j") {
			if tk.GetStatus().GetState() == tsComplete && tk.GetJobIteration() == 1 {
				n++
			}
		}
		if n != 3 || len(liveOf(tasksOf(s, "j"))) != 0 {
			return fmt.Errorf("%d complete: %s", n, brief(tasksOf(s, "j")))
		}
		return nil
	})
	// Later passes restart nothing: after a node change and a new
	// service, whose tasks show that the passes covering both have run.
	changeNode(t, s, "n1", func(n *shoalv1.Node) { n.Spec.Labels = map[string]string{"x": "y"} })
	create(t, s, mkService("k", 0, job(1, 0)))
	eventually(t, "a later pass ran", func() error {
		if len(tasksOf(s, "k")) == 0 {
			return errors.New("no task for k yet")
		}
		return nil
	})
	if live := liveOf(tasksOf(s, "j")); len(live) != 0 {
		t.Fatalf("a complete job was restarted: %s", brief(live))
	}
}

// A cron job with a seconds schedule fires on schedule, again and again,
// bumping the iteration in raft and starting each run's task; under
// forbid a run still going makes the firing skip.
func TestCronFiresOnSchedule(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1"))
	startOrchestrator(t, s)
	create(t, s, mkService("c", 0, job(1, 0), schedule("@every 1s", "")))

	eventually(t, "next execution computed, nothing run yet", func() error {
		js := jobStatusOf(s, "c")
		if js.GetNextExecution() == nil {
			return errors.New("no next_execution")
		}
		if js.GetIteration() > 0 {
			return nil // already fired: fine, the schedule is short
		}
		if n := len(tasksOf(s, "c")); n != 0 {
			return fmt.Errorf("%d tasks before the first firing", n)
		}
		return nil
	})
	eventually(t, "run 1 fired", func() error {
		if it := jobStatusOf(s, "c").GetIteration(); it < 1 {
			return fmt.Errorf("iteration %d", it)
		}
		return allAssigned(liveOf(tasksOf(s, "c")), 1)
	})
	// The run is going (its task assigned): forbid skips the firings, the
	// iteration stays while next_execution moves on.
	it := jobStatusOf(s, "c").GetIteration()
	next := jobStatusOf(s, "c").GetNextExecution().AsTime()
	eventually(t, "a firing skipped while the run goes", func() error {
		js := jobStatusOf(s, "c")
		if js.GetIteration() != it {
			return fmt.Errorf("fired while the run was going: iteration %d", js.GetIteration())
		}
		if !js.GetNextExecution().AsTime().After(next) {
			return errors.New("next_execution has not moved yet")
		}
		return nil
	})
	report(t, s, isLive, tsComplete)
	eventually(t, "the next run fired once the previous one completed", func() error {
		if got := jobStatusOf(s, "c").GetIteration(); got != it+1 {
			return fmt.Errorf("iteration %d, want %d", got, it+1)
		}
		live := liveOf(tasksOf(s, "c"))
		if len(live) != 1 || live[0].GetJobIteration() != it+1 {
			return fmt.Errorf("live %s", brief(live))
		}
		return nil
	})
}
