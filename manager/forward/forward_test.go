package forward

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/manager/ca"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

type fakeLead struct {
	leader bool
	addr   string
	ch     chan struct{}
}

func (f *fakeLead) IsLeader() bool                     { return f.leader }
func (f *fakeLead) Leader() (string, string)           { return "l", f.addr }
func (f *fakeLead) LeadershipChanged() <-chan struct{} { return f.ch }

// leaderControl answers GetTask with the forwarded-for identity it saw.
type leaderControl struct {
	shoalv1.UnimplementedControlServer
}

func (leaderControl) GetTask(ctx context.Context, req *shoalv1.GetTaskRequest) (*shoalv1.GetTaskResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	return &shoalv1.GetTaskResponse{Task: &shoalv1.Task{Meta: &shoalv1.Meta{Id: req.GetRef()},
		ServiceName: md.Get(mdForwardedFor)[0]}}, nil
}

func TestForwardsToLeader(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	shoalv1.RegisterControlServer(srv, leaderControl{})
	go srv.Serve(ln)
	defer srv.Stop()

	lead := &fakeLead{addr: ln.Addr().String(), ch: make(chan struct{})}
	f := New(lead, func(addr string) (*grpc.ClientConn, error) {
		return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer f.Close()

	ctx := ca.WithIdentity(context.Background(), ca.Identity{NodeID: "admin1", Role: ca.RoleAdmin, ClusterID: "c"})
	local := func(context.Context, any) (any, error) { return "local", nil }
	info := &grpc.UnaryServerInfo{FullMethod: "/shoal.v1.Control/GetTask"}
	out, err := f.Unary()(ctx, &shoalv1.GetTaskRequest{Ref: "t1"}, info, local)
	if err != nil {
		t.Fatal(err)
	}
	resp, ok := out.(*shoalv1.GetTaskResponse)
	if !ok || resp.GetTask().GetMeta().GetId() != "t1" || resp.GetTask().GetServiceName() != "admin1/admin/c" {
		t.Fatalf("forwarded reply = %v", out)
	}

	// The leader itself serves locally.
	lead.leader = true
	if out, _ := f.Unary()(ctx, &shoalv1.GetTaskRequest{}, info, local); out != "local" {
		t.Fatalf("leader forwarded: %v", out)
	}
	// A call that was already forwarded once is not forwarded again.
	lead.leader = false
	fctx := metadata.NewIncomingContext(ctx, metadata.Pairs(mdForwarded, "1"))
	if _, err := f.Unary()(fctx, &shoalv1.GetTaskRequest{}, info, local); status.Code(err) != codes.Unavailable {
		t.Fatalf("second hop: %v", err)
	}
	// No leader: bounded wait, then UNAVAILABLE.
	lead.addr = ""
	f.LeaderWait = 50 * time.Millisecond
	if _, err := f.Unary()(ctx, &shoalv1.GetTaskRequest{}, info, local); status.Code(err) != codes.Unavailable {
		t.Fatalf("no leader: %v", err)
	}
}

func TestIdentityFromForwardedCall(t *testing.T) {
	mgr := ca.WithIdentity(context.Background(), ca.Identity{NodeID: "m1", Role: ca.RoleManager, ClusterID: "c"})
	fwd := metadata.NewIncomingContext(mgr, metadata.Pairs(mdForwardedFor, "w1/worker/c"))
	if id, _ := Identity(fwd); id.NodeID != "w1" || id.Role != ca.RoleWorker {
		t.Fatalf("forwarded identity = %+v", id)
	}
	// Only a manager peer may speak for someone else.
	wk := ca.WithIdentity(context.Background(), ca.Identity{NodeID: "w2", Role: ca.RoleWorker})
	wk = metadata.NewIncomingContext(wk, metadata.Pairs(mdForwardedFor, "m9/manager/c"))
	if id, _ := Identity(wk); id.NodeID != "w2" {
		t.Fatalf("worker spoofed identity: %+v", id)
	}
}

func TestNewReplyUnknownMethod(t *testing.T) {
	f := New(&fakeLead{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if _, err := f.newReply("/shoal.v1.Control/Nope"); err == nil {
		t.Fatal("want error")
	}
	m, err := f.newReply("/shoal.v1.NodeCA/RenewNodeCertificate")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.(*shoalv1.IssueNodeCertificateResponse); !ok {
		t.Fatalf("reply type %T", m)
	}
}
