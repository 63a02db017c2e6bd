package raftstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Apply closes a proposal's applied channel once it is done with the entry,
// whatever its verdict; an entry it does not know leaves it open.
func TestFSMSignalsAppliedProposal(t *testing.T) {
	f := newTestFSM()
	enc := func(act *shoalv1.StoreAction) []byte {
		data, err := proto.Marshal(act)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	create := &shoalv1.StoreAction{Ops: []*shoalv1.StoreOp{opCreate(mkService("s1", "web"))}, Time: timestamppb.New(t0)}
	data := enc(create)
	applied, release := f.propose(data, create)
	defer release()
	select {
	case <-applied:
		t.Fatal("applied before Apply")
	default:
	}
	// Equal bytes in another slice are not this proposal.
	other := append([]byte(nil), data...)
	f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: other})
	select {
	case <-applied:
		t.Fatal("another slice's apply signalled the proposal")
	default:
	}
	// A refused entry (the service exists now) is done with too.
	if res := f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: data}); res == nil {
		t.Fatal("the second create applied")
	}
	select {
	case <-applied:
	default:
		t.Fatal("applied still open after Apply")
	}
	// A second Apply of the same bytes does not close it twice.
	f.Apply(&raft.Log{Index: 3, Type: raft.LogCommand, Data: data})
}

// With a deadline, Update is answered through the FSM: the index of the
// entry and the FSM's verdict, as without one.
func TestUpdateWithDeadlineReturnsTheVerdict(t *testing.T) {
	s := single(t, options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	idx, err := s.Update(ctx, func(tx WriteTx) error { return tx.Create(mkService("s1", "web")) })
	if err != nil || idx == 0 {
		t.Fatalf("create: %d, %v", idx, err)
	}
	if got, _ := Get[*shoalv1.Service](s.View(), "s1"); got.GetMeta().GetVersion() != idx {
		t.Fatalf("stored version %d, Update said %d", got.GetMeta().GetVersion(), idx)
	}
	// Two writers read the same version; the FSM refuses the second.
	stale := &shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1", Version: idx}, Spec: &shoalv1.ServiceSpec{Name: "web", Replicas: 2}}
	if _, err := s.Update(ctx, func(tx WriteTx) error { return tx.Update(proto.Clone(stale).(Object)) }); err != nil {
		t.Fatal(err)
	}
	op := opUpdate(stale, idx)
	_, err = s.Update(ctx, func(tx WriteTx) error {
		// Bypass the tx's own check (it sees the new version) to reach
		// the FSM's: write the stale op as the entry would carry it.
		return tx.(*writeTx).forceOp(op)
	})
	if !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("stale update: %v, want a version conflict", err)
	}
}

// A leader cut off from its followers cannot commit: Update fails when it
// steps down, long before the caller's deadline, rather than waiting for
// an apply that will never come.
func TestUpdateFailsWhenLeadershipIsLost(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	c.update(createIfMissing(mkService("s1", "web")))
	leader := c.leader()
	c.isolate(leader)
	defer c.heal()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	_, err := leader.store.Update(ctx, func(tx WriteTx) error { return tx.Create(mkService("s2", "api")) })
	if err == nil || ctx.Err() != nil {
		t.Fatalf("update on a cut-off leader: %v (ctx: %v), want a failure before the deadline", err, ctx.Err())
	}
	if !errors.Is(err, ErrNotLeader) {
		t.Fatalf("update on a cut-off leader: %v, want ErrNotLeader", err)
	}
}

// Leadership lost while fn builds the entry, its change broadcast before
// Update takes the leadership channel and no change after it: Update
// fails with ErrNotLeader at once. It used to wait for a wake-up that had
// already happened, until ctx's deadline or the next raft change (raft
// fails the entry without the FSM seeing it, and nothing closed the
// channel it held).
func TestUpdateSeesLeadershipLostWhileBuilding(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	c.update(createIfMissing(mkService("s1", "web")))
	old := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := old.store.Update(ctx, func(tx WriteTx) error {
		if err := old.store.raft.LeadershipTransfer().Error(); err != nil {
			return err
		}
		// Until this node knows the new leader: the last change it sees.
		eventually(t, "the old leader follows the new one", func() error {
			if _, addr := old.store.Leader(); addr == "" || addr == string(old.addr) {
				return fmt.Errorf("leader %q", addr)
			}
			return nil
		})
		old.store.lead.broadcast() // the observer's, made sure of before Update goes on
		return tx.Create(mkService("s2", "api"))
	})
	if !errors.Is(err, ErrNotLeader) || ctx.Err() != nil {
		t.Fatalf("update after leadership was lost: %v (ctx: %v), want ErrNotLeader before the deadline", err, ctx.Err())
	}
}

// An Update racing Close returns: raft's applyCh is buffered, so an entry
// Apply enqueues as raft shuts down may never be answered, and Update
// (here without a deadline, as the dispatcher's writer calls it) waited
// on it forever. Raft picks the shutdown or the buffer at random, so the
// race is run a number of times.
func TestUpdateRacingCloseReturns(t *testing.T) {
	for i := range 20 {
		s := single(t, options{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := s.Update(ctx, func(tx WriteTx) error {
				if err := s.Close(); err != nil {
					return err
				}
				return tx.Create(mkService("s1", "web"))
			})
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Fatalf("run %d: an update on a closed store succeeded", i)
			}
		case <-time.After(20 * time.Second):
			cancel() // lets the stuck Update go
			t.Fatalf("run %d: Update still waiting 20 s after the store closed", i)
		}
		cancel()
	}
}
