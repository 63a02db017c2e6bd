package agent

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

type recReconciler struct {
	calls []string
}

func (r *recReconciler) Reconcile(_ context.Context, full bool, states []*shoalv1.NetworkState, removed []string) error {
	var b strings.Builder
	if full {
		b.WriteString("full ")
	}
	for _, s := range states {
		b.WriteString(s.GetNetwork().GetMeta().GetId() + " ")
	}
	for _, r := range removed {
		b.WriteString("-" + r + " ")
	}
	r.calls = append(r.calls, strings.TrimSpace(b.String()))
	return nil
}

// TestChunkedNetworks: the chunks of a Networks message reach the
// reconciler once, whole, with the last chunk; a full first chunk drops a
// half-received message; an endless message is refused.
func TestChunkedNetworks(t *testing.T) {
	rec := &recReconciler{}
	a := New(Config{Executor: newFakeExecutor(), Networks: rec, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	st := func(id string) *shoalv1.NetworkState {
		return &shoalv1.NetworkState{Network: &shoalv1.Network{Meta: &shoalv1.Meta{Id: id}}}
	}
	msg := func(n *shoalv1.Networks) *shoalv1.SessionMessage {
		return &shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Networks{Networks: n}}
	}
	must := func(m *shoalv1.SessionMessage) {
		t.Helper()
		if err := a.handle(m); err != nil {
			t.Fatal(err)
		}
	}
	must(msg(&shoalv1.Networks{Full: true, More: true, Networks: []*shoalv1.NetworkState{st("a")}}))
	must(msg(&shoalv1.Networks{More: true, Networks: []*shoalv1.NetworkState{st("b")}}))
	if len(rec.calls) != 0 {
		t.Fatalf("applied before the last chunk: %q", rec.calls)
	}
	must(msg(&shoalv1.Networks{Networks: []*shoalv1.NetworkState{st("c")}, Removed: []string{"z"}}))
	if got := strings.Join(rec.calls, "|"); got != "full a b c -z" {
		t.Fatalf("calls %q", got)
	}
	// Half a message, then a new session's full one: the half is dropped.
	must(msg(&shoalv1.Networks{Full: true, More: true, Networks: []*shoalv1.NetworkState{st("lost")}}))
	must(msg(&shoalv1.Networks{Full: true, Networks: []*shoalv1.NetworkState{st("x")}}))
	// A one-chunk diff.
	must(msg(&shoalv1.Networks{Removed: []string{"x"}}))
	if got := strings.Join(rec.calls, "|"); got != "full a b c -z|full x|-x" {
		t.Fatalf("calls %q", got)
	}
	// A message that never ends is refused once past the bound.
	a.maxSetBytes = 200
	big := strings.Repeat("n", 100)
	var err error
	for i := 0; i < 10 && err == nil; i++ {
		err = a.handle(msg(&shoalv1.Networks{More: true, Networks: []*shoalv1.NetworkState{st(big)}}))
	}
	if err == nil || !strings.Contains(err.Error(), "without its last chunk") {
		t.Fatalf("endless message: err %v", err)
	}
	if len(rec.calls) != 3 {
		t.Fatalf("the endless message was applied: %q", rec.calls)
	}
}
