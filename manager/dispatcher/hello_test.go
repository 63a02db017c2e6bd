package dispatcher

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestSessionRefusesOversizedHello: a hello whose description is larger
// than specrules allows (here a 1 MiB hostname) is refused with the field
// path before its opening is queued: nothing of it reaches the node object
// or the raft entry it would share with other nodes' openings.
func TestSessionRefusesOversizedHello(t *testing.T) {
	c := startLive(t, &shoalv1.ClusterSettings{HeartbeatPeriodMs: 100, NodeDownAfterMissed: 4}, "a")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := shoalv1.NewDispatcherClient(conn).Session(withNode(ctx, "a"))
	if err != nil {
		t.Fatal(err)
	}
	hello := &shoalv1.AgentHello{Addr: "a:4242", Description: &shoalv1.NodeDescription{Hostname: strings.Repeat("h", 1<<20), Os: "linux"}}
	if err := stream.Send(&shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Hello{Hello: hello}}); err != nil {
		t.Fatal(err)
	}
	m, err := stream.Recv()
	// (The test server has no errdefs interceptor: the class is not
	// mapped to a gRPC code here, the message is the refusal's.)
	if st, _ := status.FromError(err); err == nil || !strings.Contains(st.Message(), "hello.description.hostname: 1048576 bytes long, at most") {
		t.Fatalf("oversized hello answered (welcome: %t), %.200v; want a refusal naming hello.description.hostname", m.GetWelcome() != nil, err)
	}
	n, _ := raftstore.Get[*shoalv1.Node](c.store.View(), "a")
	if n.GetStatus().GetState() != shoalv1.NodeState_NODE_STATE_UNKNOWN || n.GetDescription() != nil || n.GetStatus().GetAddr() != "" {
		t.Fatalf("node written from a refused hello: %v, %d bytes of hostname", n.GetStatus().GetState(), len(n.GetDescription().GetHostname()))
	}
}

// TestHelloRefusalIsInvalidArgument: the refusal of an oversized hello is
// of the invalid-argument class (INVALID_ARGUMENT on the wire).
func TestHelloRefusalIsInvalidArgument(t *testing.T) {
	d := New(Config{Logger: slog.New(slog.DiscardHandler)})
	err := d.checkHello(&shoalv1.AgentHello{GossipAddr: strings.Repeat("g", 600)})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "hello.gossip_addr") {
		t.Fatalf("checkHello: %v, want invalid argument naming hello.gossip_addr", err)
	}
}
