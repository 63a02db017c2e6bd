package client

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestNotReadyFailsOver: the first manager listed answers "not ready" (it
// was restarted without quorum, say) and keeps listening; a call moves to
// the next manager, which serves it, well within the ready wait. Before,
// the connection stayed on the first while it listened and the call failed
// after the ready wait saying it was not ready.
func TestNotReadyFailsOver(t *testing.T) {
	a := &readyServer{notReady: -1}
	b := &readyServer{}
	addrA, addrB := serveReady(t, a), serveReady(t, b)
	c := dialReady(t, 2*time.Second, addrA, addrB)
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	defer cancel()
	for i := range 3 { // later calls stay on the manager that served
		resp, err := c.GetCluster(ctx, &shoalv1.GetClusterRequest{})
		if err != nil || resp.GetLeaderId() != "l" {
			t.Fatalf("call %d: %v, %v; want the ready manager's answer", i, resp, err)
		}
	}
	if a.calls.Load() != 1 || b.calls.Load() != 3 {
		t.Fatalf("calls: %d to the manager not ready, %d to the ready one; want 1 and 3", a.calls.Load(), b.calls.Load())
	}
}

// TestEveryManagerNotReadyFailsFast: when every manager answers "not
// ready", each is asked, and after the ready wait the call fails with the
// last answer's reason first, naming every manager.
func TestEveryManagerNotReadyFailsFast(t *testing.T) {
	a, b := &readyServer{notReady: -1}, &readyServer{notReady: -1}
	addrA, addrB := serveReady(t, a), serveReady(t, b)
	c := dialReady(t, 300*time.Millisecond, addrA, addrB)
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	defer cancel()
	_, err := c.GetCluster(ctx, &shoalv1.GetClusterRequest{})
	if ctx.Err() != nil {
		t.Fatalf("the call waited for its deadline: %v", err)
	}
	msg := status.Convert(err).Message()
	if status.Code(err) != codes.Unavailable || !errdefs.IsNotReady(err) {
		t.Fatalf("got %v, want NOT_READY", err)
	}
	for _, addr := range []string{addrA, addrB} {
		if !strings.Contains(msg, "manager at "+addr+" is not ready: it holds no cluster state yet") {
			t.Fatalf("message %q does not name %s as not ready", msg, addr)
		}
	}
	if a.calls.Load() < 2 || b.calls.Load() < 2 {
		t.Fatalf("calls %d and %d: both managers are asked in turn during the ready wait", a.calls.Load(), b.calls.Load())
	}
}

// TestNotReadyAndRefusedFailsFast: one manager not ready, the other's
// address refusing connections: no manager can serve, and the call fails
// after the ready wait naming both answers.
func TestNotReadyAndRefusedFailsFast(t *testing.T) {
	addrA, addrB := serveReady(t, &readyServer{notReady: -1}), refusingAddr(t)
	c := dialReady(t, 300*time.Millisecond, addrA, addrB)
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	defer cancel()
	_, err := c.GetCluster(ctx, &shoalv1.GetClusterRequest{})
	if ctx.Err() != nil {
		t.Fatalf("the call waited for its deadline: %v", err)
	}
	msg := status.Convert(err).Message()
	if !errdefs.IsNotReady(err) || !strings.Contains(msg, "manager at "+addrA+" is not ready") ||
		!strings.Contains(msg, "nothing listens at "+addrB+" (connection refused)") {
		t.Fatalf("got %v, want NOT_READY naming %s not ready and %s refusing", err, addrA, addrB)
	}
}

// TestNotReadyManagerAskedAgain: the manager that answered "not ready" is
// left for the next address, but when that one refuses connections it is
// asked again, and its answer once ready (within the ready wait) serves
// the call.
func TestNotReadyManagerAskedAgain(t *testing.T) {
	a := &readyServer{notReady: 3}
	addrA, addrB := serveReady(t, a), refusingAddr(t)
	c := dialReady(t, time.Minute, addrA, addrB)
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	defer cancel()
	resp, err := c.GetCluster(ctx, &shoalv1.GetClusterRequest{})
	if err != nil || resp.GetLeaderId() != "l" || a.calls.Load() != 4 {
		t.Fatalf("got %v, %v after %d calls; want the answer of the manager once ready", resp, err, a.calls.Load())
	}
}

// TestResolvedTakesTurns: the address list given to the connection leaves
// out the manager that answered not ready and starts after it.
func TestResolvedTakesTurns(t *testing.T) {
	for _, tt := range []struct {
		hosts []string
		skip  string
		want  string
	}{
		{[]string{"a", "b", "c"}, "", "a,b,c"},
		{[]string{"a", "b", "c"}, "a", "b,c"},
		{[]string{"a", "b", "c"}, "b", "c,a"},
		{[]string{"a", "b", "c"}, "c", "a,b"},
		{[]string{"a"}, "a", "a"},
		{[]string{"a", "b"}, "x", "a,b"},
	} {
		l := &hostList{hosts: tt.hosts, skip: tt.skip}
		if got := strings.Join(l.resolvedLocked(), ","); got != tt.want {
			t.Errorf("hosts %v skipping %q: %s, want %s", tt.hosts, tt.skip, got, tt.want)
		}
	}
}
