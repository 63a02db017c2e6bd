package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
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
