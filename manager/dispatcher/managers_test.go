package dispatcher

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestOpenSessionToldNewManagers: a session opened while the cluster had
// one manager is sent the new list, with a heartbeat's acknowledgement,
// once another joins raft (here a non-voter, which needs no quorum of its
// own), and is not sent it again while nothing changes. Before, the list
// went out in the welcome only: the first manager's agent (and its
// node.json) knew only itself until its session opened again.
func TestOpenSessionToldNewManagers(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if _, err := s.Update(ctx, func(tx raftstore.WriteTx) error {
		if err := tx.Create(&shoalv1.Node{Meta: &shoalv1.Meta{Id: "n1"}, Spec: &shoalv1.NodeSpec{}}); err != nil {
			return err
		}
		// The test agent heartbeats only when it wants news: a period
		// longer than the test keeps the node from being judged down.
		return tx.Create(&shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "c"},
			Settings: &shoalv1.ClusterSettings{HeartbeatPeriodMs: 60000}})
	}); err != nil {
		t.Fatal(err)
	}
	members := func() []string { // as the manager's list: raft members, leader first
		ms, err := s.Members()
		if err != nil {
			return nil
		}
		var out []string
		for _, m := range ms {
			if m.Leader {
				out = append([]string{m.Addr}, out...)
			} else {
				out = append(out, m.Addr)
			}
		}
		return out
	}
	d := New(Config{Store: s, Logger: slog.New(slog.DiscardHandler), Managers: members})
	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(runCtx) }()
	t.Cleanup(func() { stopRun(); <-runDone })
	conn := serveDispatcher(t, d, asNode1)
	stream := openSession(t, ctx, conn)

	// heartbeat sends a heartbeat and returns the manager list sent with
	// its acknowledgement (nil: none).
	heartbeat := func() []string {
		t.Helper()
		if err := stream.Send(&shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Heartbeat{Heartbeat: &shoalv1.Heartbeat{HeartbeatPeriodMs: 60000}}}); err != nil {
			t.Fatal(err)
		}
		// The acknowledgement, then the list if there is news; a second
		// heartbeat's acknowledgement marks the end of what this one got.
		// The second goes once the first is acknowledged: acknowledgements
		// not sent yet coalesce (outbox).
		var list []string
		acks := 0
		for acks < 2 {
			m, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if ml := m.GetManagers(); ml != nil {
				list = ml.GetManagers()
			}
			if m.GetHeartbeatAck() != nil {
				if acks++; acks == 1 {
					if err := stream.Send(&shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Heartbeat{Heartbeat: &shoalv1.Heartbeat{HeartbeatPeriodMs: 60000}}}); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		return list
	}
	if got := heartbeat(); got != nil {
		t.Fatalf("manager list %v sent with nothing changed since the welcome", got)
	}
	if err := s.Raft().AddNonvoter("m2", "m2:4242", 0, 0).Error(); err != nil {
		t.Fatal(err)
	}
	want := []string{"solo:4242", "m2:4242"}
	deadline := time.Now().Add(waitFor)
	for {
		got := heartbeat()
		if slices.Equal(got, want) {
			break
		}
		if got != nil {
			t.Fatalf("manager list %v, want %v", got, want)
		}
		if time.Now().After(deadline) {
			t.Fatal("the open session was not told the new manager list")
		}
		time.Sleep(10 * time.Millisecond) // poll: the observer publishes the list by itself
	}
	if got := heartbeat(); got != nil {
		t.Fatalf("manager list %v sent again with nothing changed", got)
	}
}

// TestSessionOpenedBeforeListPublished: a session may open between Run
// starting (sessions are served from then) and its manager-list follower
// publishing the first list — reading generation 0, or the generation a
// previous term left — with its welcome's list; when the managers change
// in that window, the follower's first list is news to it and must be
// sent. Before, every Run published its first list as generation 0, so a
// session that read 0 was never told the change.
func TestSessionOpenedBeforeListPublished(t *testing.T) {
	for _, tc := range []struct {
		name string
		prev *managerList // left by a previous term; nil: the first
	}{
		{"first term", nil},
		{"previous term without change", &managerList{list: []string{"m1:4242"}}},
		{"previous term with changes", &managerList{gen: 3, list: []string{"m1:4242"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			list := []string{"m1:4242"}
			managers := func() []string {
				mu.Lock()
				defer mu.Unlock()
				return slices.Clone(list)
			}
			d := New(Config{Logger: slog.New(slog.DiscardHandler), Managers: managers})
			if tc.prev != nil {
				d.mgrs.Store(tc.prev)
			}
			// The session opens: its generation, then its welcome's list.
			sent := d.managersGen()
			if got := managers(); !slices.Equal(got, []string{"m1:4242"}) {
				t.Fatalf("welcome list %v", got)
			}
			// A manager joins before the follower runs.
			mu.Lock()
			list = []string{"m1:4242", "m2:4242"}
			mu.Unlock()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- d.followManagers(ctx) }()
			defer func() { cancel(); <-done }()
			deadline := time.Now().Add(waitFor)
			for m := d.mgrs.Load(); m == nil || m == tc.prev; m = d.mgrs.Load() {
				if time.Now().After(deadline) {
					t.Fatal("the follower published no list")
				}
				time.Sleep(time.Millisecond) // poll: the follower publishes by itself
			}
			if m := d.tellManagers(&sent); !slices.Equal(m.GetManagers().GetManagers(), []string{"m1:4242", "m2:4242"}) {
				t.Fatalf("told %v, want [m1:4242 m2:4242]", m)
			}
			// And only once.
			if m := d.tellManagers(&sent); m != nil {
				t.Fatalf("told again: %v", m)
			}
		})
	}
}

// TestManagerFollowerNeverHoldsRaft: the follower's raft observer must not
// block raft while the follower is busy (its list read held up here, as a
// loaded leader's might be): raft drops an observation the full channel
// cannot take, and the follower, reading the list afresh after the one it
// gets, still publishes the final list. A blocking observer would hold
// raft's main loop in the third change below, and every write with it.
// A manager removed then leaves the published list.
func TestManagerFollowerNeverHoldsRaft(t *testing.T) {
	s := openStore(t)
	gate := make(chan struct{})
	var gateOnce sync.Once
	release := func() { gateOnce.Do(func() { close(gate) }) }
	defer release() // before the store closes, even on failure
	var calls atomic.Int32
	managers := func() []string {
		if calls.Add(1) == 2 { // the first change's read
			<-gate
		}
		ms, err := s.Members()
		if err != nil {
			return nil
		}
		var out []string
		for _, m := range ms {
			out = append(out, m.Addr)
		}
		return out
	}
	d := New(Config{Store: s, Logger: slog.New(slog.DiscardHandler), Managers: managers})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.followManagers(ctx) }()
	addsDone := make(chan struct{})
	var addErr error
	// On failure too: the follower, released, reads on and so lets a
	// held raft finish the changes before it stops.
	defer func() { release(); <-addsDone; cancel(); <-done }()
	poll(t, "the first list published", func() bool { return d.mgrs.Load() != nil })
	go func() {
		defer close(addsDone)
		for _, id := range []string{"m2", "m3", "m4", "m5"} {
			if addErr = s.Raft().AddNonvoter(raft.ServerID(id), raft.ServerAddress(id+":4242"), 0, 0).Error(); addErr != nil {
				return
			}
		}
	}()
	select {
	case <-addsDone:
		if addErr != nil {
			t.Fatal(addErr)
		}
	case <-time.After(waitFor):
		t.Fatal("raft's configuration changes did not complete while the follower was busy: the observer holds raft")
	}
	release()
	want := []string{"solo:4242", "m2:4242", "m3:4242", "m4:4242", "m5:4242"}
	poll(t, "the final list published", func() bool {
		m := d.mgrs.Load()
		return m != nil && slices.Equal(m.list, want)
	})
	// A manager removed (node rm, demote) leaves the list too.
	if err := s.Raft().RemoveServer("m3", 0, 0).Error(); err != nil {
		t.Fatal(err)
	}
	want = slices.DeleteFunc(want, func(a string) bool { return a == "m3:4242" })
	poll(t, "the list without the removed manager published", func() bool {
		m := d.mgrs.Load()
		return m != nil && slices.Equal(m.list, want)
	})
}
