package daemon

import (
	"bytes"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/overlay"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// A task's RUNNING status on node a becomes one hint per attachment that
// node b's handler receives through gossip, decoded intact; statuses
// before RUNNING and tasks without networks gossip nothing.
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
	side := &agentSide{ov: &overlay.Node{}, vtep: netip.MustParseAddr("192.168.250.1")}
	task := &shoalv1.Task{Meta: &shoalv1.Meta{Id: "t1"}, Networks: []*shoalv1.NetworkAttachment{
		{NetworkId: "n1", Address: "10.80.0.2/24", Mac: "02:42:0a:50:00:02"}}}
	side.gossipHints(a, task, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_STARTING})
	side.gossipHints(a, &shoalv1.Task{Meta: &shoalv1.Meta{Id: "t0"}}, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING})
	side.gossipHints(a, task, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING})
	select {
	case h := <-got:
		if h.TaskID != "t1" || h.NetworkID != "n1" || h.Address.String() != "10.80.0.2/24" || h.VTEP.String() != "192.168.250.1" || !h.Up() {
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
