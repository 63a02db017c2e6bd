package dispatcher

import (
	"fmt"
	"log/slog"
	"testing"

	"google.golang.org/grpc"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// diffStream keeps the assignment diffs a session sends, as the agent
// would see them (each copied: the session reuses its slices).
type diffStream struct {
	grpc.ServerStream
	diffs []*shoalv1.Assignments
}

func (s *diffStream) Send(m *shoalv1.SessionMessage) error {
	if a := m.GetAssignments(); a != nil {
		s.diffs = append(s.diffs, &shoalv1.Assignments{Upsert: append([]*shoalv1.Task(nil), a.GetUpsert()...), Removed: append([]string(nil), a.GetRemoved()...)})
	}
	return nil
}
func (s *diffStream) Recv() (*shoalv1.AgentMessage, error) { select {} }

func taskEvent(action shoalv1.WatchAction, t *shoalv1.Task) *shoalv1.WatchEvent {
	return &shoalv1.WatchEvent{Action: action, Object: raftstore.Wrap(t)}
}

// TestForwardDiffs: a diff carries each task once, at its place, with its
// newest copy, a deleted task only as a removal, and the diff slice a
// session reuses (kept when short, dropped when long) never carries a task
// of an earlier diff.
func TestForwardDiffs(t *testing.T) {
	d := &Dispatcher{log: slog.New(slog.DiscardHandler)}
	up, del := shoalv1.WatchAction_WATCH_ACTION_UPDATE, shoalv1.WatchAction_WATCH_ACTION_DELETE
	for _, n := range []int{3, maxScratchUpserts + 10} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			st := &diffStream{}
			ech := newEchoes("n1", nil)
			var evs []*shoalv1.WatchEvent
			for i := range n {
				evs = append(evs, taskEvent(up, task(fmt.Sprintf("t%02d", i), "n1", shoalv1.TaskState_TASK_STATE_ASSIGNED)))
			}
			newer := task("t01", "n1", shoalv1.TaskState_TASK_STATE_ASSIGNED)
			newer.DesiredState = shoalv1.TaskState_TASK_STATE_SHUTDOWN
			evs = append(evs, taskEvent(up, newer), taskEvent(del, task("t00", "n1", shoalv1.TaskState_TASK_STATE_ASSIGNED)),
				taskEvent(up, task("other", "n2", shoalv1.TaskState_TASK_STATE_ASSIGNED)))
			if err := d.forward(st, "n1", evs, &networkTracker{}, ech); err != nil {
				t.Fatal(err)
			}
			if len(st.diffs) != 1 {
				t.Fatalf("%d diffs, want 1", len(st.diffs))
			}
			got := st.diffs[0]
			if len(got.GetUpsert()) != n-1 || fmt.Sprint(got.GetRemoved()) != "[t00]" {
				t.Fatalf("diff: %d upserts, removed %v; want %d and [t00]", len(got.GetUpsert()), got.GetRemoved(), n-1)
			}
			for i, tk := range got.GetUpsert() {
				if want := fmt.Sprintf("t%02d", i+1); tk.GetMeta().GetId() != want {
					t.Fatalf("upsert %d is %s, want %s", i, tk.GetMeta().GetId(), want)
				}
			}
			if got.GetUpsert()[0] != newer {
				t.Fatal("t01 does not carry its newest copy")
			}
			// The next diff, in the reused slice, carries only its own task.
			next := task("t99", "n1", shoalv1.TaskState_TASK_STATE_ASSIGNED)
			if err := d.forward(st, "n1", []*shoalv1.WatchEvent{taskEvent(up, next)}, &networkTracker{}, ech); err != nil {
				t.Fatal(err)
			}
			if u := st.diffs[1].GetUpsert(); len(u) != 1 || u[0] != next || len(st.diffs[1].GetRemoved()) != 0 {
				t.Fatalf("next diff: %v", st.diffs[1])
			}
		})
	}
}

// TestForwardOneTaskAllocations: from a session's second diff on, a
// one-task diff (nearly every diff at 5,000 nodes) allocates no slice of
// its own.
func TestForwardOneTaskAllocations(t *testing.T) {
	d := &Dispatcher{log: slog.New(slog.DiscardHandler)}
	st := &discardStream{}
	ech := newEchoes("n1", nil)
	ev := []*shoalv1.WatchEvent{taskEvent(shoalv1.WatchAction_WATCH_ACTION_UPDATE, task("t1", "n1", shoalv1.TaskState_TASK_STATE_ASSIGNED))}
	if err := d.forward(st, "n1", ev, &networkTracker{}, ech); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if err := d.forward(st, "n1", ev, &networkTracker{}, ech); err != nil {
			t.Fatal(err)
		}
	})
	// The diff, its chunk list, the message and its wrapper: 4 (5 with a
	// slice of its own per diff).
	if allocs > 4 {
		t.Fatalf("%.0f allocations per one-task diff, want at most 4", allocs)
	}
}

type discardStream struct{ grpc.ServerStream }

func (discardStream) Send(*shoalv1.SessionMessage) error   { return nil }
func (discardStream) Recv() (*shoalv1.AgentMessage, error) { select {} }
