package controlapi

import (
	"context"
	"github.com/shoal-dev/shoal/errdefs"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/manager/gossipkeys"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// ListNodes returns the nodes matching every filter (id prefix, name, role,
// availability, state, label "k" or "k=v").
func (s *Server) ListNodes(ctx context.Context, req *shoalv1.ListNodesRequest) (*shoalv1.ListNodesResponse, error) {
	r, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkFilters(req.GetFilters(), "id", "name", "role", "availability", "state", "label"); err != nil {
		return nil, err
	}
	f := req.GetFilters()
	rng := listRange[*shoalv1.Node]{index: raftstore.IndexID, value: f["id"],
		keep: func(n *shoalv1.Node) bool { return nodeMatches(n, f) }}
	if f["name"] != "" {
		// The name index holds spec.name, else the hostname: nodeName.
		rng.index, rng.value = raftstore.IndexName, f["name"]
	}
	resp := &shoalv1.ListNodesResponse{}
	if resp.Nodes, resp.NextPageToken, resp.Total, err = listPage(r, req.GetPage(), f, rng); err != nil {
		return nil, err
	}
	return resp, nil
}

func nodeMatches(n *shoalv1.Node, f map[string]string) bool {
	for k, v := range f {
		switch k {
		case "id":
			if !strings.HasPrefix(n.GetMeta().GetId(), v) {
				return false
			}
		case "name":
			if nodeName(n) != v {
				return false
			}
		case "role":
			if !enumIs(n.GetRole().String(), v) {
				return false
			}
		case "availability":
			if !enumIs(n.GetSpec().GetAvailability().String(), v) {
				return false
			}
		case "state":
			if !enumIs(n.GetStatus().GetState().String(), v) {
				return false
			}
		case "label":
			if !labelMatches(n.GetSpec().GetLabels(), v) {
				return false
			}
		}
	}
	return true
}

func nodeName(n *shoalv1.Node) string {
	if n.GetSpec().GetName() != "" {
		return n.GetSpec().GetName()
	}
	return n.GetDescription().GetHostname()
}

// GetNode resolves a node by id, name or unique id prefix.
func (s *Server) GetNode(ctx context.Context, req *shoalv1.GetNodeRequest) (*shoalv1.GetNodeResponse, error) {
	r, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	n, err := raftstore.ResolveRef[*shoalv1.Node](r, req.GetRef())
	if err != nil {
		return nil, err
	}
	return &shoalv1.GetNodeResponse{Node: n}, nil
}

// UpdateNode replaces a node's spec (availability, labels, name, desired
// role). Demoting is refused when it would leave no manager.
func (s *Server) UpdateNode(ctx context.Context, req *shoalv1.UpdateNodeRequest) (*shoalv1.UpdateNodeResponse, error) {
	if err := checkVersion(req.GetVersion(), req.GetIgnoreVersion()); err != nil {
		return nil, err
	}
	if err := validateNodeSpec(req.GetSpec()); err != nil {
		return nil, err
	}
	var out *shoalv1.Node
	_, err := s.updateIgnoringVersion(ctx, req.GetIgnoreVersion(), func(tx raftstore.WriteTx) error {
		cur, ok := raftstore.Get[*shoalv1.Node](tx, req.GetNodeId())
		if !ok {
			return notFound("node", req.GetNodeId())
		}
		if cur.GetSpec().GetDesiredRole() != req.GetSpec().GetDesiredRole() && callerBelowAdmin(ctx) {
			return errdefs.PermissionDeniedf("spec.desired_role: changing a node's role needs an admin (token role admin or an admin certificate)")
		}
		// A manager of an older release would misapply the raft log's
		// newer entry forms (raftstore.StoreFormat): promoted once upgraded.
		if f := cur.GetDescription().GetStoreFormat(); cur.GetSpec().GetDesiredRole() != shoalv1.NodeRole_NODE_ROLE_MANAGER &&
			req.GetSpec().GetDesiredRole() == shoalv1.NodeRole_NODE_ROLE_MANAGER && f < raftstore.StoreFormat {
			return errdefs.FailedPreconditionf("spec.desired_role: node %q reports raft store format %d, a manager must read %d; upgrade the node to this release first", req.GetNodeId(), f, raftstore.StoreFormat)
		}
		if cur.GetSpec().GetDesiredRole() == shoalv1.NodeRole_NODE_ROLE_MANAGER &&
			req.GetSpec().GetDesiredRole() == shoalv1.NodeRole_NODE_ROLE_WORKER {
			if err := canDemote(tx, cur); err != nil {
				return err
			}
		}
		n := proto.Clone(cur).(*shoalv1.Node)
		n.Spec = proto.Clone(req.GetSpec()).(*shoalv1.NodeSpec)
		if !req.GetIgnoreVersion() {
			n.Meta.Version = req.GetVersion()
		} // else checked against the version read (updateIgnoringVersion)
		out = n
		return tx.Update(n)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("node updated", "node_id", out.GetMeta().GetId(), "availability", out.GetSpec().GetAvailability().String(),
		"desired_role", out.GetSpec().GetDesiredRole().String())
	return &shoalv1.UpdateNodeResponse{Node: out}, nil
}

// canDemote refuses a demotion that would leave the cluster without a
// reachable manager majority.
func canDemote(r raftstore.Reader, n *shoalv1.Node) error {
	managers, ready := 0, 0
	for _, m := range raftstore.List[*shoalv1.Node](r) {
		if m.GetSpec().GetDesiredRole() != shoalv1.NodeRole_NODE_ROLE_MANAGER || m.GetMeta().GetId() == n.GetMeta().GetId() {
			continue
		}
		managers++
		if m.GetStatus().GetState() == shoalv1.NodeState_NODE_STATE_READY {
			ready++
		}
	}
	if managers == 0 {
		return errdefs.FailedPreconditionf("node %q is the last manager; promote another node first", n.GetMeta().GetId())
	}
	if ready <= managers/2 {
		return errdefs.FailedPreconditionf("demoting node %q would leave %d of %d remaining managers ready, short of a quorum", n.GetMeta().GetId(), ready, managers)
	}
	return nil
}

// RemoveNode deletes a node; its certificate stops being accepted at once.
// Managers must be demoted first; ready nodes need force.
func (s *Server) RemoveNode(ctx context.Context, req *shoalv1.RemoveNodeRequest) (*shoalv1.RemoveNodeResponse, error) {
	var id string
	_, err := s.store.Update(ctx, func(tx raftstore.WriteTx) error {
		n, err := raftstore.ResolveRef[*shoalv1.Node](tx, req.GetRef())
		if err != nil {
			return err
		}
		id = n.GetMeta().GetId()
		if n.GetRole() == shoalv1.NodeRole_NODE_ROLE_MANAGER || n.GetSpec().GetDesiredRole() == shoalv1.NodeRole_NODE_ROLE_MANAGER {
			return errdefs.FailedPreconditionf("node %q is a manager; demote it first (shoal node demote %s)", id, id)
		}
		if n.GetStatus().GetState() == shoalv1.NodeState_NODE_STATE_READY && !req.GetForce() {
			return errdefs.FailedPreconditionf("node %q is ready; stop it first or use --force", id)
		}
		if err := tx.Delete(raftstore.KindNode, id, n.GetMeta().GetVersion()); err != nil {
			return err
		}
		// Remember the id, so that the node's certificate is refused as
		// removed (for good) rather than as not known yet.
		c, err := clusterOf(tx)
		if err != nil {
			return err
		}
		c = proto.Clone(c).(*shoalv1.Cluster)
		if !slices.Contains(c.GetRemovedNodes(), id) {
			c.RemovedNodes = append(c.RemovedNodes, id)
		}
		// The removed node holds the gossip keys: rotate in the same
		// entry (the old keys stay accepted so live nodes do not
		// partition; the leader's gossipkeys.Dropper drops them after
		// the grace period, and the node's gossip is ignored from then).
		if len(c.GetGossipKeys()) > 0 {
			if c.GossipKeys, err = gossipkeys.Rotate(c.GetGossipKeys()); err != nil {
				return err
			}
		}
		return tx.Update(c)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("node removed; gossip key rotated", "node_id", id)
	return &shoalv1.RemoveNodeResponse{}, nil
}
