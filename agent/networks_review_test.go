package agent

import (
	"io"
	"log/slog"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestNetworkDeltasAcrossSessions: a session that ended in the middle of
// a chunked Networks message carrying a delta leaves nothing behind: the
// next session's full set replaces the states held, and its deltas apply
// to that set, not to what the half-received message would have made.
// The states handed to the reconciler earlier (which it may keep serving
// from, as overlay.Node does) are never changed by the deltas that follow.
func TestNetworkDeltasAcrossSessions(t *testing.T) {
	net := func(id string) *shoalv1.Network { return &shoalv1.Network{Meta: &shoalv1.Meta{Id: id}} }
	ep := func(task, addr string) *shoalv1.Endpoint { return &shoalv1.Endpoint{TaskId: task, Address: addr} }
	msg := func(n *shoalv1.Networks) *shoalv1.SessionMessage {
		return &shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Networks{Networks: n}}
	}
	r := &statesReconciler{}
	a := New(Config{Executor: newFakeExecutor(), Networks: r, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	handle := func(n *shoalv1.Networks) {
		t.Helper()
		if err := a.handle(msg(n)); err != nil {
			t.Fatal(err)
		}
	}
	last := func() *shoalv1.NetworkState {
		t.Helper()
		c := r.calls[len(r.calls)-1]
		if len(c) != 1 {
			t.Fatalf("reconciled %d states, want 1", len(c))
		}
		return c[0]
	}

	// Session 1: a full set, then a delta; the state it made is kept as
	// the reconciler got it.
	handle(&shoalv1.Networks{Full: true, Networks: []*shoalv1.NetworkState{
		{Network: net("a"), Endpoints: []*shoalv1.Endpoint{ep("t1", "10.1.0.1/24"), ep("t3", "10.1.0.3/24")}}}})
	handle(&shoalv1.Networks{Deltas: []*shoalv1.NetworkDelta{{NetworkId: "a", Upsert: []*shoalv1.Endpoint{ep("t2", "10.1.0.2/24")}, Endpoints: 3}}})
	served := last()
	servedWas := proto.Clone(served)
	// Its last message is cut after the first chunk (a delta): the
	// session ends.
	handle(&shoalv1.Networks{More: true, Deltas: []*shoalv1.NetworkDelta{{NetworkId: "a", Removed: []string{"t3"}, Endpoints: 2}}})

	// Session 2 starts from a full set of other endpoints, then a delta
	// that applies to it only.
	handle(&shoalv1.Networks{Full: true, Networks: []*shoalv1.NetworkState{
		{Network: net("a"), Endpoints: []*shoalv1.Endpoint{ep("t3", "10.1.0.3/24"), ep("t4", "10.1.0.4/24")}}}})
	handle(&shoalv1.Networks{Deltas: []*shoalv1.NetworkDelta{{NetworkId: "a", Removed: []string{"t4"},
		Upsert: []*shoalv1.Endpoint{ep("t3", "10.1.0.33/24")}, Endpoints: 1}}})
	want := &shoalv1.NetworkState{Network: net("a"), Endpoints: []*shoalv1.Endpoint{ep("t3", "10.1.0.33/24")}}
	if got := last(); !proto.Equal(got, want) {
		t.Fatalf("after the second session's delta the node holds %v, want %v", got, want)
	}
	if !proto.Equal(served, servedWas) {
		t.Fatalf("a state handed to the reconciler changed after: %v, was %v", served, servedWas)
	}
}
