package raftstore

import (
	"errors"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestResolveTaskByName: a task is found by the name `service ps` shows
// (SERVICE.SLOT, SERVICE.NODE-PREFIX for a global service) as well as by
// id or id prefix; of a slot's tasks the one meant to run is taken.
func TestResolveTaskByName(t *testing.T) {
	s := single(t, options{})
	running, shutdown := shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_SHUTDOWN
	task := func(id, svc, node string, slot uint64, desired, state shoalv1.TaskState) *shoalv1.Task {
		tk := mkTask(id, svc, node, desired, state)
		tk.Slot = slot
		return tk
	}
	mustUpdate(t, s, func(tx WriteTx) error {
		for _, o := range []Object{
			mkService("websvcid", "web"), mkService("globsvcid", "glob"),
			task("old1", "websvcid", "n1", 1, shutdown, shutdown),
			task("new1", "websvcid", "n1", 1, running, running),
			task("only2", "websvcid", "n2", 2, running, shoalv1.TaskState_TASK_STATE_PREPARING),
			task("ended3", "websvcid", "n2", 3, shutdown, shoalv1.TaskState_TASK_STATE_FAILED),
			task("gabc", "globsvcid", "abc123", 0, running, running),
			task("gabd", "globsvcid", "abd456", 0, running, running),
		} {
			if err := tx.Create(o); err != nil {
				return err
			}
		}
		return nil
	})
	// A later task of slot 1, meant to run but not RUNNING yet (a
	// start-first update): the RUNNING one is still the one meant.
	mustUpdate(t, s, func(tx WriteTx) error {
		return tx.Create(task("newer1", "websvcid", "n2", 1, running, shoalv1.TaskState_TASK_STATE_STARTING))
	})
	r := s.View()
	for _, c := range []struct{ ref, want string }{
		{"web.1", "new1"},
		{"web.2", "only2"},
		{"web.3", "ended3"},  // no task meant to run: the newest
		{"websvc.1", "new1"}, // the service by id prefix
		{"glob.abc", "gabc"},
		{"glob.abd4", "gabd"},
		{"new1", "new1"}, // an id
		{"onl", "only2"}, // an id prefix
	} {
		got, err := ResolveTask(r, c.ref)
		if err != nil || got.GetMeta().GetId() != c.want {
			t.Errorf("ResolveTask(%q) = %v, %v; want task %s", c.ref, got.GetMeta().GetId(), err, c.want)
		}
	}
	for _, c := range []struct {
		ref  string
		want error
	}{
		{"web.4", ErrNotFound},
		{"nosuch.1", ErrNotFound},
		{"glob.ab", ErrAmbiguous},
		{"web.", ErrNotFound},
		{"zzz", ErrNotFound},
	} {
		if got, err := ResolveTask(r, c.ref); !errors.Is(err, c.want) {
			t.Errorf("ResolveTask(%q) = %v, %v; want %v", c.ref, got.GetMeta().GetId(), err, c.want)
		}
	}
}
