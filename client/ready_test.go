package client

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// callDeadline is far beyond every ready wait below: a call that returns
// before it did not wait for its deadline.
const callDeadline = 60 * time.Second

// readyServer answers GetCluster with notReady NOT_READY answers, then
// unavailable plain UNAVAILABLE ones (an election), then the cluster; and
// holds UpdateCluster until its deadline (a slow call).
type readyServer struct {
	shoalv1.UnimplementedControlServer
	notReady, unavailable int32
	calls                 atomic.Int32
	watches               atomic.Int32 // Watch calls (stream_test.go)
}

func (r *readyServer) GetCluster(context.Context, *shoalv1.GetClusterRequest) (*shoalv1.GetClusterResponse, error) {
	n := r.calls.Add(1)
	switch {
	case r.notReady < 0 || n <= r.notReady:
		return nil, errdefs.NotReadyf("manager not ready: it holds no cluster state yet")
	case n <= r.notReady+r.unavailable:
		return nil, errdefs.Unavailablef("electing")
	}
	return &shoalv1.GetClusterResponse{LeaderId: "l"}, nil
}

func (r *readyServer) UpdateCluster(ctx context.Context, _ *shoalv1.UpdateClusterRequest) (*shoalv1.UpdateClusterResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func serveReady(t *testing.T, r *readyServer) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(errdefs.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(errdefs.StreamServerInterceptor()))
	shoalv1.RegisterControlServer(srv, r)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// refusingAddr is an address where nothing listens: connections to it are
// refused at once.
func refusingAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func dialReady(t *testing.T, readyWait time.Duration, hosts ...string) shoalv1.ControlClient {
	t.Helper()
	conn, err := DialHostsReadyWait(hosts, insecure.NewCredentials(), readyWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return shoalv1.NewControlClient(conn)
}

// TestRefusedFailsFast: when every manager address refuses connections
// (nothing listens: the node is down or not started), a call gives up
// after the ready wait, long before its deadline, and says so naming the
// addresses, instead of retrying for its whole --timeout.
func TestRefusedFailsFast(t *testing.T) {
	a, b := refusingAddr(t), refusingAddr(t)
	c := dialReady(t, 200*time.Millisecond, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	defer cancel()
	_, err := c.GetCluster(ctx, &shoalv1.GetClusterRequest{})
	if ctx.Err() != nil {
		t.Fatalf("the call waited for its deadline: %v", err)
	}
	msg := status.Convert(err).Message()
	if status.Code(err) != codes.Unavailable || !errdefs.IsNotReady(err) ||
		!strings.Contains(msg, "no manager listens at "+a+", "+b) || !strings.Contains(msg, "connection refused") {
		t.Fatalf("got %v, want UNAVAILABLE saying nothing listens at %s, %s", err, a, b)
	}
}

// TestNotReadyFailsFast: a manager that keeps answering NOT_READY (it is
// starting and its raft has no leader) is retried for the ready wait, then
// the call fails saying which manager is not ready and why.
func TestNotReadyFailsFast(t *testing.T) {
	r := &readyServer{notReady: -1}
	addr := serveReady(t, r)
	c := dialReady(t, 200*time.Millisecond, addr)
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	defer cancel()
	_, err := c.GetCluster(ctx, &shoalv1.GetClusterRequest{})
	if ctx.Err() != nil {
		t.Fatalf("the call waited for its deadline: %v", err)
	}
	msg := status.Convert(err).Message()
	if status.Code(err) != codes.Unavailable || msg != "manager at "+addr+" is not ready: it holds no cluster state yet" {
		t.Fatalf("got %v, want the manager at %s named as not ready", err, addr)
	}
	if r.calls.Load() < 2 {
		t.Fatalf("%d calls: a not-ready manager is retried within the ready wait", r.calls.Load())
	}
}

// TestBecomesReadyWithinWait: a manager that is ready after a few NOT_READY
// answers, within the ready wait, answers the call.
func TestBecomesReadyWithinWait(t *testing.T) {
	r := &readyServer{notReady: 3}
	c := dialReady(t, time.Minute, serveReady(t, r))
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	defer cancel()
	if resp, err := c.GetCluster(ctx, &shoalv1.GetClusterRequest{}); err != nil || resp.GetLeaderId() != "l" || r.calls.Load() != 4 {
		t.Fatalf("got %v, %v after %d calls", resp, err, r.calls.Load())
	}
}

// TestElectionStillRetried: plain UNAVAILABLE answers (an election, a
// follower between leaders) are retried past the ready wait, until the
// deadline, as before: only "not ready" and refused connections end early.
func TestElectionStillRetried(t *testing.T) {
	// 8 answers of back-off (25, 50, 100, 200, 250 ms ...) outlast the
	// 1 ms ready wait many times over.
	r := &readyServer{notReady: 1, unavailable: 8}
	c := dialReady(t, time.Millisecond, serveReady(t, r))
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	defer cancel()
	if resp, err := c.GetCluster(ctx, &shoalv1.GetClusterRequest{}); err != nil || resp.GetLeaderId() != "l" {
		t.Fatalf("got %v, %v after %d calls", resp, err, r.calls.Load())
	}
}

// TestSlowCallKeepsItsTimeout: a call a ready manager holds (a write it
// cannot commit yet) runs to its own deadline, past the ready wait, and
// ends as a timeout, not as "not ready".
func TestSlowCallKeepsItsTimeout(t *testing.T) {
	c := dialReady(t, time.Millisecond, serveReady(t, &readyServer{}))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := c.UpdateCluster(ctx, &shoalv1.UpdateClusterRequest{})
	// Not ctx.Err(): the deadline travels to the server, which may end the
	// call a moment before this side's context notices.
	if status.Code(err) != codes.DeadlineExceeded || errdefs.IsNotReady(err) {
		t.Fatalf("held call: %v, want its deadline", err)
	}
}

// TestNoReadyWaitRetriesToDeadline: without a ready wait (DialHosts, the
// library's default), refused connections are retried until the deadline,
// as before.
func TestNoReadyWaitRetriesToDeadline(t *testing.T) {
	c := dialReady(t, 0, refusingAddr(t))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := c.GetCluster(ctx, &shoalv1.GetClusterRequest{})
	if status.Code(err) != codes.Unavailable || errdefs.IsNotReady(err) || ctx.Err() == nil {
		t.Fatalf("got %v (ctx %v), want retries until the deadline", err, ctx.Err())
	}
}

// membersServer answers GetCluster with the raft members it is given.
type membersServer struct {
	shoalv1.UnimplementedControlServer
	name    string
	members []string
}

func (m *membersServer) GetCluster(context.Context, *shoalv1.GetClusterRequest) (*shoalv1.GetClusterResponse, error) {
	resp := &shoalv1.GetClusterResponse{LeaderId: m.name}
	for _, a := range m.members {
		resp.Members = append(resp.Members, &shoalv1.RaftMember{Addr: a})
	}
	return resp, nil
}

// TestLearnManagersFailsOver: a client that started from one manager's
// address (a data dir whose node.json lists only itself) learns the raft
// members from it, and once that manager is gone its calls reach another.
func TestLearnManagersFailsOver(t *testing.T) {
	lnA, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lnB, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	members := []string{lnA.Addr().String(), lnB.Addr().String()}
	a, b := grpc.NewServer(), grpc.NewServer()
	shoalv1.RegisterControlServer(a, &membersServer{name: "a", members: members})
	shoalv1.RegisterControlServer(b, &membersServer{name: "b", members: members})
	go a.Serve(lnA)
	go b.Serve(lnB)
	defer a.Stop()
	defer b.Stop()
	c, ctx := learnedClient(t, members[:1], time.Second)
	if got := c.Hosts(); len(got) != 2 || got[0] != members[0] || got[1] != members[1] {
		t.Fatalf("hosts after learning: %v, want %v", got, members)
	}
	a.Stop() // the manager the client started from dies
	resp, err := c.Control.GetCluster(ctx, &shoalv1.GetClusterRequest{})
	if err != nil || resp.GetLeaderId() != "b" {
		t.Fatalf("after the first manager died: %v, %v; want the answer of the learned one", resp, err)
	}
}

// TestLearnedManagerNotTakenForRefused: a client that started from one
// manager's address and learned the others (LearnManagers, as a service
// wait does) loses that manager (its leader, killed): its address refuses
// connections while a learned manager answers plain UNAVAILABLE (an
// election). That is not "no manager listens": the call is retried past
// the ready wait and gets the learned manager's answer. Before, the
// refused-everywhere test looked at the addresses the client started from
// only, and the call failed after the ready wait saying nothing listened
// at the dead manager's address.
func TestLearnedManagerNotTakenForRefused(t *testing.T) {
	b := serveReady(t, &readyServer{unavailable: 8}) // 8 answers of back-off outlast the 1 ms ready wait
	lnA, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := lnA.Addr().String()
	srvA := grpc.NewServer()
	shoalv1.RegisterControlServer(srvA, &membersServer{name: "a", members: []string{a, b}})
	go srvA.Serve(lnA)
	defer srvA.Stop()
	c, ctx := learnedClient(t, []string{a}, time.Millisecond)
	srvA.Stop() // the manager the client started from dies: its address refuses
	resp, err := c.Control.GetCluster(ctx, &shoalv1.GetClusterRequest{})
	if err != nil || resp.GetLeaderId() != "l" {
		t.Fatalf("after the first manager died: %v, %v; want the learned manager's answer once it is elected", resp, err)
	}
}

// TestRefusedNamesLearnedManagers: once every address, learned ones
// included, refuses connections, the call fails fast naming them all.
func TestRefusedNamesLearnedManagers(t *testing.T) {
	lnA, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, b := lnA.Addr().String(), refusingAddr(t)
	srvA := grpc.NewServer()
	shoalv1.RegisterControlServer(srvA, &membersServer{name: "a", members: []string{a, b}})
	go srvA.Serve(lnA)
	defer srvA.Stop()
	hosts := &hostList{hosts: []string{a}}
	conn, err := dialHosts(hosts, insecure.NewCredentials(), 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &Client{Control: shoalv1.NewControlClient(conn), conn: conn, hosts: hosts}
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	defer cancel()
	if err := c.LearnManagers(ctx); err != nil {
		t.Fatal(err)
	}
	srvA.Stop()
	_, err = c.Control.GetCluster(ctx, &shoalv1.GetClusterRequest{})
	if ctx.Err() != nil || !errdefs.IsNotReady(err) || !strings.Contains(status.Convert(err).Message(), "no manager listens at "+a+", "+b) {
		t.Fatalf("every address refusing: %v, want NOT_READY naming %s, %s", err, a, b)
	}
}

// learnedClient is a client dialled to hosts (ready wait wait) that has
// learned the managers (LearnManagers), with a context for its calls;
// both end with the test.
func learnedClient(t *testing.T, hosts []string, wait time.Duration) (*Client, context.Context) {
	t.Helper()
	hl := &hostList{hosts: hosts}
	conn, err := dialHosts(hl, insecure.NewCredentials(), wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &Client{Control: shoalv1.NewControlClient(conn), conn: conn, hosts: hl}
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	t.Cleanup(cancel)
	if err := c.LearnManagers(ctx); err != nil {
		t.Fatal(err)
	}
	return c, ctx
}
