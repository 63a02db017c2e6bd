package client

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Watch answers as GetCluster does (notReady NOT_READY answers first, its
// calls counted in watches), then sends one event at index 42 and holds
// the stream open.
func (r *readyServer) Watch(_ *shoalv1.WatchRequest, st grpc.ServerStreamingServer[shoalv1.WatchEvent]) error {
	n := r.watches.Add(1)
	if r.notReady < 0 || n <= r.notReady {
		return errdefs.NotReadyf("manager not ready: it holds no cluster state yet")
	}
	if err := st.Send(&shoalv1.WatchEvent{Index: 42}); err != nil {
		return err
	}
	<-st.Context().Done()
	return nil
}

// TestStreamNotReadyFailsOver: a stream (shoal events, service logs, the
// watch of a wait) opened while the first manager listed answers "not
// ready" goes on to the next manager, as a unary call does. Before, only
// unary calls failed over: `shoal events` failed at once naming the
// manager that was not ready while another could serve it.
func TestStreamNotReadyFailsOver(t *testing.T) {
	a, b := &readyServer{notReady: -1}, &readyServer{}
	c := dialReady(t, 2*time.Second, serveReady(t, a), serveReady(t, b))
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	defer cancel()
	st, err := c.Watch(ctx, &shoalv1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Headers first, as `service logs` reads them: a refusal has none, so
	// the stream is not taken as answered by them.
	if _, err := st.Header(); err != nil {
		t.Fatal(err)
	}
	ev, err := st.Recv()
	if err != nil || ev.GetIndex() != 42 {
		t.Fatalf("got %v, %v; want the ready manager's event", ev, err)
	}
	if a.watches.Load() != 1 || b.watches.Load() != 1 {
		t.Fatalf("watches: %d to the manager not ready, %d to the ready one; want 1 and 1", a.watches.Load(), b.watches.Load())
	}
}

// TestStreamEveryManagerNotReadyFailsFast: a stream no manager can serve
// fails after the ready wait with every manager's reason, the last first.
func TestStreamEveryManagerNotReadyFailsFast(t *testing.T) {
	a, b := &readyServer{notReady: -1}, &readyServer{notReady: -1}
	addrA, addrB := serveReady(t, a), serveReady(t, b)
	c := dialReady(t, 300*time.Millisecond, addrA, addrB)
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	defer cancel()
	st, err := c.Watch(ctx, &shoalv1.WatchRequest{})
	if err == nil {
		_, err = st.Recv()
	}
	if ctx.Err() != nil {
		t.Fatalf("the stream waited for its deadline: %v", err)
	}
	msg := status.Convert(err).Message()
	if status.Code(err) != codes.Unavailable || !errdefs.IsNotReady(err) {
		t.Fatalf("got %v, want NOT_READY", err)
	}
	for _, addr := range []string{addrA, addrB} {
		if !strings.Contains(msg, "manager at "+addr+" is not ready") {
			t.Fatalf("message %q does not name %s as not ready", msg, addr)
		}
	}
}

// TestStreamNotReadyWithoutReadyWait: a connection without a ready wait
// (DialHosts) hands a stream's "not ready" to the caller as before, but
// the connection moves off that manager, so the caller's next stream goes
// to the next one.
func TestStreamNotReadyWithoutReadyWait(t *testing.T) {
	a, b := &readyServer{notReady: -1}, &readyServer{}
	c := dialReady(t, 0, serveReady(t, a), serveReady(t, b))
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	defer cancel()
	st, err := c.Watch(ctx, &shoalv1.WatchRequest{})
	if err == nil {
		_, err = st.Recv()
	}
	if !errdefs.IsNotReady(err) {
		t.Fatalf("got %v, want the first manager's NOT_READY", err)
	}
	st, err = c.Watch(ctx, &shoalv1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := st.Recv(); err != nil || ev.GetIndex() != 42 {
		t.Fatalf("second watch: %v, %v; want the ready manager's event", ev, err)
	}
}
