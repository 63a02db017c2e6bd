package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

type fakeReconciler struct {
	calls []string
	err   error
}

func (f *fakeReconciler) Reconcile(ctx context.Context, full bool, states []*shoalv1.NetworkState, removed []string) error {
	c := "diff"
	if full {
		c = "full"
	}
	for _, s := range states {
		c += " +" + s.GetNetwork().GetMeta().GetId()
	}
	for _, r := range removed {
		c += " -" + r
	}
	f.calls = append(f.calls, c)
	return f.err
}

// TestSessionNetworks: a Networks message reaches the reconciler as it
// came; a failed reconciliation does not end the session.
func TestSessionNetworks(t *testing.T) {
	r := &fakeReconciler{}
	a := New(Config{Executor: newFakeExecutor(), Networks: r, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	msg := func(full bool, add []string, removed []string) *shoalv1.SessionMessage {
		n := &shoalv1.Networks{Full: full, Removed: removed}
		for _, id := range add {
			n.Networks = append(n.Networks, &shoalv1.NetworkState{Network: &shoalv1.Network{Meta: &shoalv1.Meta{Id: id}}})
		}
		return &shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Networks{Networks: n}}
	}
	if err := a.handle(msg(true, []string{"a", "b"}, nil)); err != nil {
		t.Fatal(err)
	}
	r.err = errors.New("kernel says no")
	if err := a.handle(msg(false, []string{"c"}, []string{"a"})); err != nil {
		t.Fatalf("a reconciliation error ended the session: %v", err)
	}
	if got := r.calls; len(got) != 2 || got[0] != "full +a +b" || got[1] != "diff +c -a" {
		t.Fatalf("calls %q", got)
	}
	// Without a reconciler the message is ignored.
	b := New(Config{Executor: newFakeExecutor(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := b.handle(msg(true, []string{"a"}, nil)); err != nil {
		t.Fatal(err)
	}
}

// statesReconciler records the states each Reconcile call was given.
type statesReconciler struct{ calls [][]*shoalv1.NetworkState }

func (f *statesReconciler) Reconcile(ctx context.Context, full bool, states []*shoalv1.NetworkState, removed []string) error {
	f.calls = append(f.calls, states)
	return nil
}

// TestSessionNetworkDeltas: a delta applies to the state the node holds
// (sent whole or made by earlier deltas) and the reconciler gets the
// whole state it makes; a delta of a network not held, one that does not
// apply, or one in a full set ends the session; chunks carry deltas too.
func TestSessionNetworkDeltas(t *testing.T) {
	net := func(id string) *shoalv1.Network { return &shoalv1.Network{Meta: &shoalv1.Meta{Id: id}} }
	ep := func(task string) *shoalv1.Endpoint { return &shoalv1.Endpoint{TaskId: task, Address: "10.1.0.1/24"} }
	msg := func(n *shoalv1.Networks) *shoalv1.SessionMessage {
		return &shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Networks{Networks: n}}
	}
	ids := func(s *shoalv1.NetworkState) string {
		out := s.GetNetwork().GetMeta().GetId() + ":"
		for _, e := range s.GetEndpoints() {
			out += " " + e.GetTaskId()
		}
		return out
	}
	r := &statesReconciler{}
	a := New(Config{Executor: newFakeExecutor(), Networks: r, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := a.handle(msg(&shoalv1.Networks{Full: true, Networks: []*shoalv1.NetworkState{
		{Network: net("a"), Endpoints: []*shoalv1.Endpoint{ep("t1"), ep("t3")}},
		{Network: net("b"), Endpoints: []*shoalv1.Endpoint{ep("t9")}},
	}})); err != nil {
		t.Fatal(err)
	}
	// Two deltas in a row: the second applies to what the first made.
	if err := a.handle(msg(&shoalv1.Networks{Deltas: []*shoalv1.NetworkDelta{{NetworkId: "a", Upsert: []*shoalv1.Endpoint{ep("t2")}, Endpoints: 3}}})); err != nil {
		t.Fatal(err)
	}
	if err := a.handle(msg(&shoalv1.Networks{Deltas: []*shoalv1.NetworkDelta{{NetworkId: "a", Removed: []string{"t1"}, Endpoints: 2}}})); err != nil {
		t.Fatal(err)
	}
	// Chunks: a whole state in the first, a delta in the last.
	if err := a.handle(msg(&shoalv1.Networks{More: true, Networks: []*shoalv1.NetworkState{{Network: net("c")}}})); err != nil {
		t.Fatal(err)
	}
	if err := a.handle(msg(&shoalv1.Networks{Deltas: []*shoalv1.NetworkDelta{{NetworkId: "b", Upsert: []*shoalv1.Endpoint{ep("t8")}, Endpoints: 2}}})); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, call := range r.calls[1:] {
		var c []string
		for _, s := range call {
			c = append(c, ids(s))
		}
		got = append(got, strings.Join(c, " | "))
	}
	want := []string{"a: t1 t2 t3", "a: t2 t3", "c: | b: t8 t9"}
	if !slices.Equal(got, want) {
		t.Fatalf("reconciled %q, want %q", got, want)
	}

	for _, c := range []struct {
		name string
		n    *shoalv1.Networks
		want string
	}{
		{"a network not held", &shoalv1.Networks{Deltas: []*shoalv1.NetworkDelta{{NetworkId: "z", Endpoints: 0}}}, "does not hold"},
		{"a removal not held", &shoalv1.Networks{Deltas: []*shoalv1.NetworkDelta{{NetworkId: "a", Removed: []string{"t1"}, Endpoints: 1}}}, "does not apply"},
		{"counts not the manager's", &shoalv1.Networks{Deltas: []*shoalv1.NetworkDelta{{NetworkId: "a", Upsert: []*shoalv1.Endpoint{ep("t4")}, Endpoints: 9}}}, "does not apply"},
		{"a network removed in the same message", &shoalv1.Networks{Removed: []string{"a"}, Deltas: []*shoalv1.NetworkDelta{{NetworkId: "a", Endpoints: 2}}}, "does not hold"},
		{"a full set", &shoalv1.Networks{Full: true, Deltas: []*shoalv1.NetworkDelta{{NetworkId: "a", Endpoints: 2}}}, "full network set carries"},
	} {
		calls := len(r.calls)
		err := a.handle(msg(c.n))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one that says %q", c.name, err, c.want)
		}
		if len(r.calls) != calls {
			t.Errorf("%s: reconciled though the session ends", c.name)
		}
		// The next session starts from a full set.
		if err := a.handle(msg(&shoalv1.Networks{Full: true, Networks: []*shoalv1.NetworkState{
			{Network: net("a"), Endpoints: []*shoalv1.Endpoint{ep("t2"), ep("t3")}}}})); err != nil {
			t.Fatal(err)
		}
	}
}
