// Package membership keeps the managers' raft group in line with the nodes'
// roles.
//
// A node that holds a manager certificate (joined with the manager token, or
// promoted and renewed) calls RaftMembership.JoinRaft with its address and
// the raft store format its own binary reads; the leader adds it as a
// voter, unless that format is below raftstore.StoreFormat (or missing: a
// release before the field), which it refuses with FailedPrecondition on
// store_format: the log may hold entries such a binary would misapply, and
// the format checked when the certificate was issued says nothing of the
// binary running now. The leader's reconciler removes from raft the
// nodes whose desired role became worker (demote) or that were deleted, and
// records in each manager node's ManagerStatus its address and whether it
// leads.
package membership

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/manager/forward"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

// Server implements shoalv1.RaftMembershipServer and the leader reconciler.
type Server struct {
	shoalv1.UnimplementedRaftMembershipServer
	store *raftstore.Store
	log   *slog.Logger
	// passes counts reconcile passes (tests).
	passes atomic.Int64
}

// reconcileGap is the least time between two passes started by node
// events: a pass lists every node, and 5,000 sessions opening (a node
// event each) made it a quarter of the leader's CPU, O(nodes²).
const reconcileGap = 250 * time.Millisecond

// New returns the membership service.
func New(store *raftstore.Store, logger *slog.Logger) *Server {
	return &Server{store: store, log: logger.With("component", "membership")}
}

// JoinRaft adds the calling manager node to the raft group as a voter.
func (s *Server) JoinRaft(ctx context.Context, req *shoalv1.JoinRaftRequest) (*shoalv1.JoinRaftResponse, error) {
	id, ok := forward.Identity(ctx)
	if !ok || id.Role != trust.RoleManager {
		return nil, errdefs.PermissionDeniedf("only nodes with a manager certificate join raft")
	}
	if req.GetAddr() == "" {
		return nil, errdefs.InvalidArgumentf("addr: required")
	}
	n, ok := raftstore.Get[*shoalv1.Node](s.store.View(), id.NodeID)
	if !ok {
		return nil, errdefs.NodeRemovedf("node %q %s", id.NodeID, trust.RemovedReason)
	}
	if n.GetSpec().GetDesiredRole() != shoalv1.NodeRole_NODE_ROLE_MANAGER {
		return nil, errdefs.FailedPreconditionf("node %q is not meant to be a manager", id.NodeID)
	}
	if err := checkStoreFormat(id.NodeID, req.GetStoreFormat()); err != nil {
		return nil, err
	}
	if err := s.store.AddVoter(ctx, id.NodeID, req.GetAddr()); err != nil {
		if errors.Is(err, raftstore.ErrNotLeader) {
			return nil, err // unavailable: retried at the leader
		}
		return nil, errdefs.Internalf("adding voter %q: %v", id.NodeID, err)
	}
	s.log.Info("manager joined raft", "node_id", id.NodeID, "addr", req.GetAddr())
	members, err := s.store.Members()
	if err != nil {
		return nil, errdefs.Internalf("%v", err)
	}
	resp := &shoalv1.JoinRaftResponse{}
	for _, m := range members {
		resp.Members = append(resp.Members, &shoalv1.RaftMember{NodeId: m.ID, Addr: m.Addr, Suffrage: m.Suffrage})
	}
	return resp, nil
}

// checkStoreFormat refuses a joining manager whose binary may not read
// every entry the log holds. The log may hold any form up to this leader's
// raftstore.StoreFormat (the leader writes a compact form whenever every
// manager reports it, and entries of an earlier such window stay in the
// log until a snapshot), so that is the bar. The format is the one the
// caller's binary sends, not the one in its node description: that was
// checked when its certificate was issued (nodeca), and an older binary
// swapped in since would replay entries it misapplies. A request without
// it comes from a release before the field, which is refused the same way.
// A caller already in raft is refused too: a no-op for raft, but its
// operator learns that this binary cannot follow the log.
func checkStoreFormat(nodeID string, f uint32) error {
	if f >= raftstore.StoreFormat {
		return nil
	}
	if f == 0 {
		return errdefs.FailedPreconditionf("store_format: not sent by node %q (a release before joins carried it); a manager must read raft store format %d: run this release on the node to join it as a manager", nodeID, raftstore.StoreFormat)
	}
	return errdefs.FailedPreconditionf("store_format: node %q reads raft store format %d, but this cluster's log may hold format %d entries: run this release on the node to join it as a manager", nodeID, f, raftstore.StoreFormat)
}

// Run is the leader-only reconciler. It reacts to node changes and to raft
// configuration changes (checked on a slow tick, as raft has no event for
// them that survives leader changes).
func (s *Server) Run(ctx context.Context) error {
	sub, err := s.store.Watch(ctx, 0, raftstore.KindNode)
	if err != nil {
		return err
	}
	defer sub.Close()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		last := time.Now()
		s.passes.Add(1)
		if err := s.reconcile(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("membership reconcile", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-sub.C():
			if !ok {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if sub, err = s.store.Watch(ctx, 0, raftstore.KindNode); err != nil {
					return err
				}
				continue
			}
			// The events of the next reconcileGap go into one pass.
			gap := time.NewTimer(time.Until(last.Add(reconcileGap)))
		drain:
			for {
				select {
				case <-ctx.Done():
					gap.Stop()
					return ctx.Err()
				case _, ok := <-sub.C():
					if !ok {
						break drain // resubscribed after the next pass
					}
				case <-gap.C:
					break drain
				}
			}
			gap.Stop()
		case <-tick.C:
		}
	}
}

func (s *Server) reconcile(ctx context.Context) error {
	members, err := s.store.Members()
	if err != nil {
		return err
	}
	view := s.store.View()
	inRaft := map[string]raftstore.Member{}
	for _, m := range members {
		inRaft[m.ID] = m
		n, ok := raftstore.Get[*shoalv1.Node](view, m.ID)
		demoted := ok && n.GetSpec().GetDesiredRole() == shoalv1.NodeRole_NODE_ROLE_WORKER
		if (!ok || demoted) && len(members) > 1 {
			s.log.Info("removing node from raft", "node_id", m.ID, "removed", !ok, "demoted", demoted)
			if err := s.store.RemoveServer(ctx, m.ID); err != nil {
				return err
			}
			delete(inRaft, m.ID)
		}
	}
	// Record manager status where it changed; one entry for all nodes.
	_, err = s.store.Update(ctx, func(tx raftstore.WriteTx) error {
		for _, n := range raftstore.List[*shoalv1.Node](tx) {
			want := (*shoalv1.ManagerStatus)(nil)
			if m, ok := inRaft[n.GetMeta().GetId()]; ok {
				want = &shoalv1.ManagerStatus{Addr: m.Addr, Leader: m.Leader, Reachability: reachability(n)}
			}
			if proto.Equal(want, n.GetManagerStatus()) {
				continue
			}
			n = proto.Clone(n).(*shoalv1.Node)
			n.ManagerStatus = want
			if err := tx.Update(n); err != nil {
				return err
			}
		}
		return nil
	})
	return err
}

func reachability(n *shoalv1.Node) string {
	if n.GetStatus().GetState() == shoalv1.NodeState_NODE_STATE_READY {
		return "reachable"
	}
	return "unreachable"
}
