package membership

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

// JoinRaft admits a manager only when the binary calling it reads the raft
// store format the leader's log may hold (the request's store_format, not
// the description its certificate was issued for): an older one, or one
// that sends no format (the release before the field), is refused with
// FailedPrecondition naming store_format, and raft's configuration is left
// as it was; the current format joins.
func TestJoinRaftChecksCallersStoreFormat(t *testing.T) {
	const rt = 100 * time.Millisecond
	open := func(id string, trans *raft.InmemTransport, boot bool) *raftstore.Store {
		s, err := raftstore.Open(raftstore.Config{
			NodeID: id, Addr: id + ":4242", InMemory: true, Transport: trans, Bootstrap: boot,
			HeartbeatTimeout: rt, ElectionTimeout: rt, LeaderLeaseTimeout: rt, CommitTimeout: 5 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	_, t1 := raft.NewInmemTransport("m1:4242")
	_, t2 := raft.NewInmemTransport("m2:4242")
	t1.Connect("m2:4242", t2)
	t2.Connect("m1:4242", t1)
	lead := open("m1", t1, true)
	open("m2", t2, false)
	poll(t, "m1 leads", func() bool { return lead.IsLeader() })

	// m2's node object, as nodeca wrote it at the join: its description
	// reported the current format when the certificate was issued.
	ctx := context.Background()
	if _, err := lead.Update(ctx, func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Node{
			Meta:        &shoalv1.Meta{Id: "m2"},
			Spec:        &shoalv1.NodeSpec{DesiredRole: shoalv1.NodeRole_NODE_ROLE_MANAGER},
			Role:        shoalv1.NodeRole_NODE_ROLE_MANAGER,
			Description: &shoalv1.NodeDescription{Hostname: "m2", StoreFormat: raftstore.StoreFormat},
		})
	}); err != nil {
		t.Fatal(err)
	}
	srv := New(lead, slog.New(slog.NewTextHandler(io.Discard, nil)))
	caller := trust.WithIdentity(ctx, trust.Identity{NodeID: "m2", Role: trust.RoleManager, ClusterID: "c1"})
	voters := func() int {
		members, err := lead.Members()
		if err != nil {
			t.Fatal(err)
		}
		return len(members)
	}

	for _, tc := range []struct {
		name   string
		format uint32
		want   string // in the refusal; "" joins
	}{
		{"an older binary swapped in", raftstore.StoreFormat - 1, fmt.Sprintf("reads raft store format %d,", raftstore.StoreFormat-1)},
		{"a release before the field", 0, "not sent"},
		{"this release", raftstore.StoreFormat, ""},
	} {
		resp, err := srv.JoinRaft(caller, &shoalv1.JoinRaftRequest{Addr: "m2:4242", StoreFormat: tc.format})
		if tc.want == "" {
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if len(resp.GetMembers()) != 2 || voters() != 2 {
				t.Fatalf("%s: members %v after the join, want m1 and m2", tc.name, resp.GetMembers())
			}
			continue
		}
		st := status.Convert(errdefs.ToGRPC(err))
		if st.Code() != codes.FailedPrecondition || !strings.HasPrefix(st.Message(), "store_format: ") || !strings.Contains(st.Message(), tc.want) {
			t.Fatalf("%s: got %v, want FailedPrecondition on store_format saying %q", tc.name, err, tc.want)
		}
		if n := voters(); n != 1 {
			t.Fatalf("%s: refused, yet raft has %d members", tc.name, n)
		}
	}
}
