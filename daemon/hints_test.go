package daemon

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/overlay"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// A task's RUNNING status on node a becomes one hint per attachment that
// node b's handler receives through gossip, decoded intact; statuses
// before RUNNING and tasks without networks gossip nothing. The VTEP is
// a's own (gossip) address: a hint naming another VTEP is dropped and
// counted (TestForgedHintVTEPDropped).
func TestGossipHints(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := startGossip(log, "a", "127.0.0.1", freePort(t))
	t.Cleanup(a.close)
	b := startGossip(log, "b", "127.0.0.1", freePort(t))
	t.Cleanup(b.close)
	k := bytes.Repeat([]byte{7}, 32)
	a.SetGossip([][]byte{k}, nil)
	b.SetGossip([][]byte{k}, []string{a.Addr()})
	got := make(chan overlay.Hint, 16)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	b.setHintHandler(func(raw []byte) {
		h, err := overlay.DecodeHint(raw)
		if err != nil {
			t.Errorf("decode: %v", err)
			return
		}
		got <- h
	}, stop)
	deadline := time.Now().Add(20 * time.Second)
	for s, _ := a.State("b"); s != "alive"; s, _ = a.State("b") {
		if time.Now().After(deadline) {
			t.Fatal("a does not see b")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// gossipHints needs only an overlay (non-nil) and the VTEP.
	side := &agentSide{ov: &overlay.Node{}, vtep: netip.MustParseAddr("127.0.0.1")}
	task := &shoalv1.Task{Meta: &shoalv1.Meta{Id: "t1"}, Networks: []*shoalv1.NetworkAttachment{
		{NetworkId: "n1", Address: "10.80.0.2/24", Mac: "02:42:0a:50:00:02"}}}
	side.gossipHints(a, task, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_STARTING})
	side.gossipHints(a, &shoalv1.Task{Meta: &shoalv1.Meta{Id: "t0"}}, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING})
	side.gossipHints(a, task, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING})
	select {
	case h := <-got:
		if h.TaskID != "t1" || h.NetworkID != "n1" || h.Address.String() != "10.80.0.2/24" || h.VTEP.String() != "127.0.0.1" || !h.Up() {
			t.Fatalf("hint %+v", h)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no hint received")
	}
	side.gossipHints(a, task, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_COMPLETE})
	for {
		select {
		case h := <-got:
			if h.Up() {
				continue // a retransmission of the first
			}
			if h.TaskID != "t1" || h.State != shoalv1.TaskState_TASK_STATE_COMPLETE {
				t.Fatalf("hint %+v", h)
			}
			return
		case <-time.After(20 * time.Second):
			t.Fatal("no down hint received")
		}
	}
}

// TestForgedHintVTEPDropped: a member holding the key sends, under its own
// name and from its own gossip socket, a hint whose endpoint points at
// another VTEP; the receiver drops and counts it and delivers the next,
// honest hint (VTEP = the sender's address).
func TestForgedHintVTEPDropped(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := startGossip(log, "a", "127.0.0.1", freePort(t))
	t.Cleanup(a.close)
	b := startGossip(log, "b", "127.0.0.1", freePort(t))
	t.Cleanup(b.close)
	k := bytes.Repeat([]byte{8}, 32)
	a.SetGossip([][]byte{k}, nil)
	b.SetGossip([][]byte{k}, []string{a.Addr()})
	got := make(chan overlay.Hint, 16)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	b.setHintHandler(func(raw []byte) {
		if h, err := overlay.DecodeHint(raw); err == nil {
			got <- h
		}
	}, stop)
	deadline := time.Now().Add(20 * time.Second)
	for s, _ := a.State("b"); s != "alive"; s, _ = a.State("b") {
		if time.Now().After(deadline) {
			t.Fatal("a does not see b")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for s, _ := b.State("a"); s != "alive"; s, _ = b.State("a") {
		if time.Now().After(deadline) {
			t.Fatal("b does not see a")
		}
		time.Sleep(10 * time.Millisecond)
	}
	send := func(task, vtep string) {
		h := overlay.Hint{NetworkID: "n1", TaskID: task, Address: netip.MustParsePrefix("10.80.0.2/24"),
			MAC: net.HardwareAddr{2, 0x42, 10, 80, 0, 2}, VTEP: netip.MustParseAddr(vtep), State: shoalv1.TaskState_TASK_STATE_RUNNING}
		raw, err := h.Encode()
		if err != nil {
			t.Fatal(err)
		}
		a.broadcast(raw)
	}
	send("forged", "192.168.250.66")
	for b.hintsRejected() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the forged hint was not counted as rejected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	send("honest", "127.0.0.1")
	select {
	case h := <-got:
		if h.TaskID != "honest" {
			t.Fatalf("delivered hint for task %q, want only the honest one", h.TaskID)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the honest hint was not delivered")
	}
}
