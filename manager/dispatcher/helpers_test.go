package dispatcher

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/hashicorp/raft"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

// waitFor is generous: two busy cores, other suites running alongside.
const waitFor = 15 * time.Second

func openStore(t testing.TB) *raftstore.Store {
	t.Helper()
	_, trans := raft.NewInmemTransport("solo:4242")
	const rt = 100 * time.Millisecond
	s, err := raftstore.Open(raftstore.Config{
		NodeID: "solo", InMemory: true, Transport: trans, Bootstrap: true,
		HeartbeatTimeout: rt, ElectionTimeout: rt, LeaderLeaseTimeout: rt, CommitTimeout: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	poll(t, "the store leads", func() bool { return s.IsLeader() })
	return s
}

// poll waits for cond with a deadline (a poll, not a timing assertion).
func poll(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, waitFor)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// identityStream gives a stream the identity mTLS would.
type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s identityStream) Context() context.Context { return s.ctx }

// serveDispatcher serves d on a loopback port, each stream given the
// identity idOf names for its context (as mTLS would), and returns a
// client connection to it. The connection, then the server, are closed
// at cleanup: register the stop of d.Run before calling, so that it
// runs after them.
func serveDispatcher(tb testing.TB, d *Dispatcher, idOf func(context.Context) trust.Identity) *grpc.ClientConn {
	tb.Helper()
	srv := grpc.NewServer(grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return errdefs.ToGRPC(h(srv, identityStream{ss, trust.WithIdentity(ss.Context(), idOf(ss.Context()))}))
	}))
	shoalv1.RegisterDispatcherServer(srv, d)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Stop()
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Stop)
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// asNode1 is the identity of node n1's certificate.
func asNode1(context.Context) trust.Identity {
	return trust.Identity{NodeID: "n1", Role: trust.RoleWorker}
}

// runTestAgent is node's agent session on conn (its identity from the
// "rig-node" metadata: serveDispatcher with rigIdentity): a hello (saying
// it applies network deltas, or not: an agent of an earlier release), the
// welcome (or the error) sent to welcomed, then a heartbeat every 500 ms
// while it reads what the dispatcher sends, handing each Networks
// message to onNetworks, until ctx ends or the stream does.
func runTestAgent(ctx context.Context, conn *grpc.ClientConn, node string, deltas bool, welcomed chan<- error, onNetworks func(*shoalv1.Networks)) {
	stream, err := shoalv1.NewDispatcherClient(conn).Session(metadata.AppendToOutgoingContext(ctx, "rig-node", node))
	if err == nil {
		err = stream.Send(&shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Hello{Hello: &shoalv1.AgentHello{Addr: node, NetworkDeltas: deltas}}})
	}
	var m *shoalv1.SessionMessage
	if err == nil {
		m, err = stream.Recv()
	}
	if err == nil && m.GetWelcome() == nil {
		err = fmt.Errorf("%s: first message %v, want the welcome", node, m)
	}
	welcomed <- err
	if err != nil {
		return
	}
	go heartbeat(ctx, stream, 500*time.Millisecond)
	for {
		m, err := stream.Recv()
		if err != nil {
			return
		}
		if n := m.GetNetworks(); n != nil {
			onNetworks(n)
		}
	}
}

// rigIdentity is the node identity a stream's "rig-node" metadata names
// (runTestAgent), as its certificate would.
func rigIdentity(ctx context.Context) trust.Identity {
	md, _ := metadata.FromIncomingContext(ctx)
	return trust.Identity{NodeID: md.Get("rig-node")[0], Role: trust.RoleWorker}
}

// heartbeat sends a heartbeat on stream every period until ctx ends or a
// send fails, as an agent keeps its session alive.
func heartbeat(ctx context.Context, stream shoalv1.Dispatcher_SessionClient, period time.Duration) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if stream.Send(&shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Heartbeat{Heartbeat: &shoalv1.Heartbeat{}}}) != nil {
				return
			}
		}
	}
}
