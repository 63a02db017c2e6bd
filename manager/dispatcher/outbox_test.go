package dispatcher

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

func periodAck(ms int64) *shoalv1.SessionMessage {
	return &shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_HeartbeatAck{HeartbeatAck: &shoalv1.Heartbeat{HeartbeatPeriodMs: ms}}}
}

func managersMsg(list ...string) *shoalv1.SessionMessage {
	return &shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Managers{Managers: &shoalv1.ManagerList{Managers: list}}}
}

// TestOutboxCoalesces: what the receiver leaves while the session loop is
// busy coalesces into one acknowledgement and one list, and loses neither
// a period (a plain acknowledgement does not replace one naming it; a
// newer period does) nor the newest list.
func TestOutboxCoalesces(t *testing.T) {
	tests := []struct {
		name     string
		put      []*shoalv1.SessionMessage
		ackMs    int64 // -1: no acknowledgement pending
		managers []string
	}{
		{"nothing", nil, -1, nil},
		{"plain acks: one", []*shoalv1.SessionMessage{plainAck, plainAck}, 0, nil},
		{"a plain ack keeps a period", []*shoalv1.SessionMessage{periodAck(200), plainAck, plainAck}, 200, nil},
		{"a period replaces a plain ack", []*shoalv1.SessionMessage{plainAck, periodAck(200)}, 200, nil},
		{"the newer period wins", []*shoalv1.SessionMessage{periodAck(200), plainAck, periodAck(100), plainAck}, 100, nil},
		{"the newest list wins", []*shoalv1.SessionMessage{managersMsg("m1"), managersMsg("m1", "m2"), managersMsg("m1", "m3")}, -1, []string{"m1", "m3"}},
		{"both", []*shoalv1.SessionMessage{managersMsg("m1", "m2"), periodAck(300), plainAck}, 300, []string{"m1", "m2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newOutbox()
			for _, m := range tt.put {
				if m.GetManagers() != nil {
					o.put(nil, m)
				} else {
					o.put(m, nil)
				}
			}
			if want := len(tt.put) > 0; (len(o.ready) > 0) != want {
				t.Fatalf("signalled %v, want %v", len(o.ready) > 0, want)
			}
			ack, mgrs := o.take()
			switch {
			case tt.ackMs < 0 && ack != nil:
				t.Fatalf("acknowledgement %v, want none", ack)
			case tt.ackMs >= 0 && (ack.GetHeartbeatAck() == nil || ack.GetHeartbeatAck().GetHeartbeatPeriodMs() != tt.ackMs):
				t.Fatalf("acknowledgement %v, want one naming %d ms", ack, tt.ackMs)
			}
			if got := mgrs.GetManagers().GetManagers(); !slices.Equal(got, tt.managers) {
				t.Fatalf("list %v, want %v", got, tt.managers)
			}
			if a, m := o.take(); a != nil || m != nil {
				t.Fatalf("still pending after take: %v %v", a, m)
			}
		})
	}
}

// recordStream records what is sent on it.
type recordStream struct {
	shoalv1.Dispatcher_SessionServer
	sent []*shoalv1.SessionMessage
}

func (s *recordStream) Send(m *shoalv1.SessionMessage) error {
	s.sent = append(s.sent, m)
	return nil
}

// TestOutboxFlushOrder: the acknowledgement goes out before the list, as
// the receiver sent them before the outbox; an empty outbox sends nothing.
func TestOutboxFlushOrder(t *testing.T) {
	o := newOutbox()
	if o.put(nil, nil); len(o.ready) > 0 {
		t.Fatal("signalled with nothing left")
	}
	o.put(periodAck(200), managersMsg("m1", "m2"))
	st := &recordStream{}
	if err := o.flush(st); err != nil {
		t.Fatal(err)
	}
	if len(st.sent) != 2 || st.sent[0].GetHeartbeatAck().GetHeartbeatPeriodMs() != 200 || len(st.sent[1].GetManagers().GetManagers()) != 2 {
		t.Fatalf("sent %v, want the acknowledgement then the list", st.sent)
	}
	if err := o.flush(st); err != nil || len(st.sent) != 2 {
		t.Fatalf("an empty outbox sent %v (%v)", st.sent[2:], err)
	}
}

// sendGate holds every Send of a session's stream while shut, as gRPC's
// write quota holds it while the agent does not read.
type sendGate struct {
	shut    atomic.Bool
	waiting chan struct{} // a token when a Send starts waiting
	open    chan struct{} // closed: Sends go through again
	once    sync.Once
}

func (g *sendGate) release() { g.once.Do(func() { close(g.open) }) }

type gatedStream struct {
	grpc.ServerStream
	g *sendGate
}

func (s gatedStream) SendMsg(m any) error {
	if s.g.shut.Load() {
		select {
		case s.g.waiting <- struct{}{}:
		default:
		}
		select {
		case <-s.g.open:
		case <-s.Context().Done():
			return s.Context().Err()
		}
	}
	return s.ServerStream.SendMsg(m)
}

// TestStalledSendKeepsReceiving: a session whose sends are stuck (its
// agent stopped reading: a handler stalled for 28 s in a benchmark) still
// reads the heartbeats its agent sends from another goroutine, and notes
// the node seen: the node is not judged DOWN. Before, the receiver sent
// each acknowledgement itself and waited behind the stuck send (the
// stream's lock), read nothing more, and every node of the benchmark was
// marked DOWN and its tasks replaced. What the session had for the agent
// meanwhile (a longer period, two manager lists) reaches it once the
// sends go through: the period, though plain acknowledgements followed
// it, and the newest list.
func TestStalledSendKeepsReceiving(t *testing.T) {
	gate := &sendGate{waiting: make(chan struct{}, 1), open: make(chan struct{})}
	defer gate.release() // before the server stops, even on failure
	var mgrs atomic.Pointer[[]string]
	mgrs.Store(&[]string{"solo:4242"})
	c := startLiveWrapped(t, func(ss grpc.ServerStream) grpc.ServerStream { return gatedStream{ServerStream: ss, g: gate} }, nil,
		func(cfg *Config) { cfg.Managers = func() []string { return *mgrs.Load() } },
		&shoalv1.ClusterSettings{HeartbeatPeriodMs: 100, NodeDownAfterMissed: 4}, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	defer cancel()
	stream := c.open(t, ctx, "a")
	msgs := make(chan *shoalv1.SessionMessage, 1024)
	go func() {
		defer close(msgs)
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			msgs <- m
		}
	}()
	nodeState := func() shoalv1.NodeState {
		n, _ := raftstore.Get[*shoalv1.Node](c.store.View(), "a")
		return n.GetStatus().GetState()
	}
	eventually(t, "the session's opening written", func() error {
		if s := nodeState(); s != shoalv1.NodeState_NODE_STATE_READY {
			return fmt.Errorf("node %v", s)
		}
		return nil
	})
	heartbeat := func() {
		t.Helper()
		if err := stream.Send(&shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Heartbeat{Heartbeat: &shoalv1.Heartbeat{HeartbeatPeriodMs: 100}}}); err != nil {
			t.Fatal(err)
		}
	}
	lastSeen := func() time.Time {
		c.d.mu.Lock()
		defer c.d.mu.Unlock()
		return c.d.lastSeen["a"]
	}

	// The agent stops reading: the session loop's next send (its node's
	// update) sticks, as it did in forward in the benchmark.
	gate.shut.Store(true)
	if _, err := c.store.Update(ctx, func(tx raftstore.WriteTx) error {
		n, _ := raftstore.Get[*shoalv1.Node](tx, "a")
		n = proto.Clone(n).(*shoalv1.Node)
		n.Spec = &shoalv1.NodeSpec{Labels: map[string]string{"zone": "b"}}
		return tx.Update(n)
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gate.waiting:
	case <-ctx.Done():
		t.Fatal("the session sent nothing for the node's update")
	}
	stuck := time.Now()

	// Meanwhile the period grows and the managers change twice, each seen
	// by a heartbeat; plain acknowledgements follow the period's.
	if _, err := c.store.Update(ctx, func(tx raftstore.WriteTx) error {
		cl, _ := raftstore.ClusterOf(tx)
		cl = proto.Clone(cl).(*shoalv1.Cluster)
		cl.Settings.HeartbeatPeriodMs = 200
		return tx.Update(cl)
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the monitor reads the longer period", func() error {
		if p := time.Duration(c.d.scaled.Load()); p != 200*time.Millisecond {
			return fmt.Errorf("period %v", p)
		}
		return nil
	})
	heartbeat()
	for _, list := range [][]string{{"solo:4242", "m2:4242"}, {"solo:4242", "m3:4242"}} {
		mgrs.Store(&list)
		c.d.publishManagers(false)
		heartbeat()
	}

	// The agent heartbeats on (its own goroutine, every 50 ms here) for
	// three down limits (4 periods of 200 ms) after the send stuck: every
	// heartbeat is read, the node is seen and never judged DOWN.
	limit := 4 * 200 * time.Millisecond
	tick := time.NewTicker(50 * time.Millisecond) // the heartbeats' pace
	defer tick.Stop()
	for lastSeen().Before(stuck.Add(3 * limit)) {
		select {
		case <-tick.C:
			heartbeat()
		case <-ctx.Done():
			t.Fatalf("heartbeats unread while the session's send is stuck: last seen %v after it stuck", lastSeen().Sub(stuck))
		}
		if s := nodeState(); s != shoalv1.NodeState_NODE_STATE_READY {
			t.Fatalf("node %v while it heartbeats", s)
		}
	}

	// The agent reads again: the period and the newest list reach it.
	gate.shut.Store(false)
	gate.release()
	var gotPeriod, gotList bool
	for !gotPeriod || !gotList {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("session ended; period told %v, list told %v", gotPeriod, gotList)
			}
			gotPeriod = gotPeriod || m.GetHeartbeatAck().GetHeartbeatPeriodMs() == 200
			if l := m.GetManagers().GetManagers(); l != nil {
				gotList = slices.Equal(l, []string{"solo:4242", "m3:4242"})
			}
		case <-tick.C:
			heartbeat()
		case <-ctx.Done():
			t.Fatalf("after the send went through: period told %v, newest list told %v", gotPeriod, gotList)
		}
	}
}
