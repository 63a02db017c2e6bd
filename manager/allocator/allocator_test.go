package allocator

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

func newStore(t *testing.T) *raftstore.Store {
	t.Helper()
	_, trans := raft.NewInmemTransport("solo:1")
	st, err := raftstore.Open(raftstore.Config{
		NodeID: "solo", InMemory: true, Transport: trans, Bootstrap: true,
		HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	waitFor(t, "leadership", func() bool { return st.IsLeader() })
	return st
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func update(t *testing.T, st *raftstore.Store, fn func(tx raftstore.WriteTx) error) {
	t.Helper()
	if _, err := st.Update(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

func addrOf(st *raftstore.Store, id string) string {
	tk, ok := raftstore.Get[*shoalv1.Task](st.View(), id)
	if !ok || len(tk.GetNetworks()) == 0 {
		return ""
	}
	return tk.GetNetworks()[0].GetAddress()
}

// TestAllocatorRun: over a real store, a pending task gets its address and
// the service its VIP; an ended task's address is not the next one handed
// out; a new leader (a new Allocator) rebuilds and hands out no held one.
func TestAllocatorRun(t *testing.T) {
	st := newStore(t)
	update(t, st, func(tx raftstore.WriteTx) error {
		if err := tx.Create(net("n1", "10.1.0.0/29")); err != nil {
			return err
		}
		if err := tx.Create(svc("s1", "vip", "n1")); err != nil {
			return err
		}
		return tx.Create(task("t1", statePending, "n1"))
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- newAllocator(st, nil).Run(ctx) }()
	waitFor(t, "t1 allocated", func() bool { return addrOf(st, "t1") != "" })
	s, _ := raftstore.Get[*shoalv1.Service](st.View(), "s1")
	if len(s.GetVips()) != 1 || s.GetVips()[0].GetAddress() != "10.1.0.2/29" || addrOf(st, "t1") != "10.1.0.3/29" {
		t.Fatalf("vips %v, t1 %s", s.GetVips(), addrOf(st, "t1"))
	}
	// t1 fails; t2 must not get its address while never-used ones remain.
	update(t, st, func(tx raftstore.WriteTx) error {
		t1, _ := raftstore.Get[*shoalv1.Task](tx, "t1")
		t1 = cloneT(t1)
		t1.Status.State = shoalv1.TaskState_TASK_STATE_FAILED
		if err := tx.Update(t1); err != nil {
			return err
		}
		return tx.Create(task("t2", statePending, "n1"))
	})
	waitFor(t, "t2 allocated", func() bool { return addrOf(st, "t2") != "" })
	if got := addrOf(st, "t2"); got != "10.1.0.4/29" {
		t.Fatalf("t2 got %s, want 10.1.0.4/29 (not the just-freed .3)", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A new leader's allocator rebuilds: .2 (VIP) and .4 (t2) are held.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go func() { _ = newAllocator(st, nil).Run(ctx2) }()
	update(t, st, func(tx raftstore.WriteTx) error {
		for _, id := range []string{"t3", "t4", "t5"} {
			if err := tx.Create(task(id, statePending, "n1")); err != nil {
				return err
			}
		}
		return nil
	})
	waitFor(t, "t3..t5 allocated", func() bool { return addrOf(st, "t3") != "" && addrOf(st, "t4") != "" && addrOf(st, "t5") != "" })
	seen := map[string]string{"10.1.0.2/29": "vip", "10.1.0.4/29": "t2"}
	for _, id := range []string{"t3", "t4", "t5"} {
		a := addrOf(st, id)
		if o, dup := seen[a]; dup {
			t.Fatalf("%s got %s, held by %s", id, a, o)
		}
		seen[a] = id
	}
	// The pool (/29: .2-.6) is now full: t6 stays pending with a reason.
	update(t, st, func(tx raftstore.WriteTx) error { return tx.Create(task("t6", statePending, "n1")) })
	waitFor(t, "t6 refused", func() bool {
		tk, _ := raftstore.Get[*shoalv1.Task](st.View(), "t6")
		return tk.GetStatus().GetMessage() != ""
	})
	tk, _ := raftstore.Get[*shoalv1.Task](st.View(), "t6")
	if len(tk.GetNetworks()) != 0 || tk.GetStatus().GetState() != statePending {
		t.Fatalf("t6: %v", tk)
	}
	t.Logf("t6: %s", tk.GetStatus().GetMessage())

	// An address freed (t3 ends) is what t6 waits for: it gets it without
	// any other change to prompt a pass.
	freed := addrOf(st, "t3")
	update(t, st, func(tx raftstore.WriteTx) error {
		t3, _ := raftstore.Get[*shoalv1.Task](tx, "t3")
		t3 = cloneT(t3)
		t3.Status.State = shoalv1.TaskState_TASK_STATE_FAILED
		return tx.Update(t3)
	})
	waitFor(t, "t6 allocated once an address is freed", func() bool { return addrOf(st, "t6") != "" })
	if got := addrOf(st, "t6"); got != freed {
		t.Fatalf("t6 got %s, want the freed %s (the only free address)", got, freed)
	}
}

func cloneT(t *shoalv1.Task) *shoalv1.Task { return proto.Clone(t).(*shoalv1.Task) }
