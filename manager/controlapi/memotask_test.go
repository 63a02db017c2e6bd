package controlapi

import (
	"bytes"
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// storedTaskEncoding is the deterministic encoding of the task stored for
// service id, and the stored version.
func storedTaskEncoding(t *testing.T, s *Server, id string) ([]byte, uint64) {
	t.Helper()
	svc, ok := raftstore.Get[*shoalv1.Service](s.store.View(), id)
	if !ok {
		t.Fatalf("service %s not stored", id)
	}
	enc, err := taskEncoding.Marshal(svc.GetSpec().GetTask())
	if err != nil {
		t.Fatal(err)
	}
	return enc, svc.GetMeta().GetVersion()
}

// The encoding the memo keeps for a version is the encoding of the task
// stored at that version, after every kind of update (label only, task
// changed, defaults left for the manager to fill, the stored task sent
// back as read), so that comparing with it is comparing with the stored
// task. A create remembers no encoding (it encodes nothing).
func TestMemoTaskEncodingIsTheStoredTasks(t *testing.T) {
	s, _ := newServer(t)
	ctx := context.Background()
	created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: validSpec()})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetService().GetMeta().GetId()
	if known, _ := s.checked.sameEncoding(id, created.GetService().GetMeta().GetVersion(), []byte{1}); known {
		t.Fatal("a create remembered an encoding")
	}
	version := created.GetService().GetMeta().GetVersion()
	steps := []struct {
		name string
		spec func() *shoalv1.ServiceSpec
	}{
		{"label only", func() *shoalv1.ServiceSpec {
			sp := validSpec()
			sp.Labels = map[string]string{"a": "1"}
			return sp
		}},
		{"label again (answered from the memo)", func() *shoalv1.ServiceSpec {
			sp := validSpec()
			sp.Labels = map[string]string{"a": "2"}
			return sp
		}},
		{"image changed", func() *shoalv1.ServiceSpec {
			sp := validSpec()
			sp.Task.Container.Image = "demo:2"
			return sp
		}},
		{"env and restart policy given", func() *shoalv1.ServiceSpec {
			sp := validSpec()
			sp.Task.Container.Image = "demo:2"
			sp.Task.Container.Env = []string{"A=1"}
			sp.Task.Restart = &shoalv1.RestartPolicy{Condition: shoalv1.RestartCondition_RESTART_CONDITION_ON_FAILURE, MaxAttempts: 3}
			return sp
		}},
		{"the stored spec sent back", func() *shoalv1.ServiceSpec {
			svc, _ := raftstore.Get[*shoalv1.Service](s.store.View(), id)
			return proto.Clone(svc.GetSpec()).(*shoalv1.ServiceSpec)
		}},
	}
	for _, st := range steps {
		up, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: id, Version: version, Spec: st.spec()})
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		version = up.GetService().GetMeta().GetVersion()
		enc, stored := storedTaskEncoding(t, s, id)
		if stored != version {
			t.Fatalf("%s: stored version %d, reply %d", st.name, stored, version)
		}
		known, same := s.checked.sameEncoding(id, version, enc)
		if !known || !same {
			t.Errorf("%s: memo at %d: known %v, same as the stored task's encoding %v", st.name, version, known, same)
		}
		s.checked.mu.Lock()
		kept := s.checked.m[id].task
		s.checked.mu.Unlock()
		if !bytes.Equal(kept, enc) {
			t.Errorf("%s: memo keeps %x, stored task encodes to %x", st.name, kept, enc)
		}
	}
}

// An update at a version whose task encoding the memo holds compares the
// task it was sent with that encoding instead of encoding the stored task:
// shown by a memo doctored to hold the sent task's encoding while the
// stored task differs (which a real memo never does,
// TestMemoTaskEncodingIsTheStoredTasks): the update is then taken as
// leaving the task alone (no spec_version bump). Without the memo's
// encoding the same update bumps it.
func TestUpdateServiceComparesWithTheMemoEncoding(t *testing.T) {
	for _, doctored := range []bool{false, true} {
		s, _ := newServer(t)
		ctx := context.Background()
		created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: validSpec()})
		if err != nil {
			t.Fatal(err)
		}
		svc := created.GetService()
		id, version := svc.GetMeta().GetId(), svc.GetMeta().GetVersion()
		spec := validSpec()
		spec.Task.Container.Image = "demo:3"
		if doctored {
			sent := proto.Clone(spec).(*shoalv1.ServiceSpec)
			taskDefaults(sent)
			enc, err := taskEncoding.Marshal(sent.GetTask())
			if err != nil {
				t.Fatal(err)
			}
			s.checked = checkedTasks{}
			s.checked.addEncoded(id, version, enc)
		}
		up, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: id, Version: version, Spec: spec})
		if err != nil {
			t.Fatal(err)
		}
		bumped := up.GetService().GetSpecVersion() != svc.GetSpecVersion()
		if bumped == doctored {
			t.Errorf("doctored memo %v: spec_version %d → %d (bumped %v)", doctored, svc.GetSpecVersion(), up.GetService().GetSpecVersion(), bumped)
		}
	}
}

// addEncoded keeps the later version's encoding, copies what it is given,
// and keeps none for an encoding above the bound.
func TestCheckedTasksEncoding(t *testing.T) {
	var c checkedTasks
	enc := []byte("task-a")
	c.addEncoded("a", 5, enc)
	enc[0] = 'X' // the caller's buffer is reused after the call
	if known, same := c.sameEncoding("a", 5, []byte("task-a")); !known || !same {
		t.Errorf("sameEncoding(5, task-a) = %v, %v; want known and same", known, same)
	}
	if known, same := c.sameEncoding("a", 5, []byte("task-b")); !known || same {
		t.Errorf("sameEncoding(5, task-b) = %v, %v; want known, not same", known, same)
	}
	if known, _ := c.sameEncoding("a", 4, []byte("task-a")); known {
		t.Error("an encoding known at another version")
	}
	c.addEncoded("a", 3, []byte("older")) // an earlier write answered later
	if known, same := c.sameEncoding("a", 5, []byte("task-a")); !known || !same {
		t.Error("an earlier write replaced the later one's encoding")
	}
	c.add("a", 6)
	if known, _ := c.sameEncoding("a", 6, []byte("task-a")); known || !c.has("a", 6) {
		t.Error("add kept an encoding of another version, or lost the version")
	}
	c.addEncoded("a", 7, make([]byte, maxMemoTaskBytes+1))
	if known, _ := c.sameEncoding("a", 7, make([]byte, maxMemoTaskBytes+1)); known || !c.has("a", 7) {
		t.Error("an encoding above the bound kept, or the version lost")
	}
	if known, _ := c.sameEncoding("a", 7, nil); known {
		t.Error("no encoding compared as known")
	}
}
