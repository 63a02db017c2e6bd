package controlapi

import (
	"context"
	"github.com/shoal-dev/shoal/errdefs"
	"log/slog"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

// Server implements shoalv1.ControlServer on top of the replicated store.
type Server struct {
	shoalv1.UnimplementedControlServer
	store *raftstore.Store
	log   *slog.Logger
	// netMu serialises the writes that check networks against each other
	// or against their users (network create/rm/prune, service
	// create/update resolving networks or publishing ports, see
	// lockServiceWrite): each builds its transaction on a
	// view, and the FSM sees no conflict between two creates of new ids,
	// so two racing creates would take the same VNI and subnet. Writes
	// happen on the leader only, so a process-wide lock suffices.
	netMu sync.Mutex
	// checked lets UpdateService skip the rules of a task it checked
	// itself and that has not changed since.
	checked checkedTasks
	// clusterID is the cluster object's id once read (see theCluster).
	clusterID atomic.Pointer[string]
}

// theCluster returns the cluster object of r, the one raftstore.ClusterOf
// returns, looked up by its id once that is known: ClusterOf lists the
// cluster table (an iterator and two slices), and every UpdateService
// read it for the max-replicas setting (1.8 % of the leader at 256
// writers). The store holds one cluster object, created at bootstrap and
// never replaced, so its id does not change; a view where that id is not
// found (before bootstrap, a restored store of another cluster) is asked
// by listing, as before.
func (s *Server) theCluster(r raftstore.Reader) (*shoalv1.Cluster, bool) {
	if id := s.clusterID.Load(); id != nil {
		if c, ok := raftstore.Get[*shoalv1.Cluster](r, *id); ok {
			return c, true
		}
	}
	c, ok := raftstore.ClusterOf(r)
	if ok {
		id := c.GetMeta().GetId()
		s.clusterID.Store(&id)
	}
	return c, ok
}

// lockServiceWrite takes netMu for a service create or update whose spec
// must be checked against writes the FSM would not see as conflicting: one
// that joins networks (a racing network rm) or publishes ports (a racing
// service publishing the same port). It returns the unlock. Every other
// service write goes ahead unserialised, so that raft batches concurrent
// writes into one append: with netMu around every update, 256 concurrent
// UpdateService calls committed one raft round trip at a time (113/s on 3
// managers, docs/performance.md).
func (s *Server) lockServiceWrite(spec *shoalv1.ServiceSpec) func() {
	need := len(spec.GetTask().GetNetworks()) > 0
	for _, p := range spec.GetEndpoint().GetPorts() {
		need = need || p.GetPublishedPort() != 0
	}
	if !need {
		return func() {}
	}
	s.netMu.Lock()
	return s.netMu.Unlock
}

// New returns a control API server.
func New(store *raftstore.Store, logger *slog.Logger) *Server {
	return &Server{store: store, log: logger.With("component", "controlapi")}
}

// read returns a linearizable view: the API promises that a read sees every
// write acknowledged before it started.
func (s *Server) read(ctx context.Context) (raftstore.Reader, error) {
	return s.store.ReadLinearizable(ctx)
}

// clusterOf returns the single cluster object of a view.
func clusterOf(r raftstore.Reader) (*shoalv1.Cluster, error) {
	c, ok := raftstore.ClusterOf(r)
	if !ok {
		return nil, errdefs.FailedPreconditionf("the cluster is still being bootstrapped")
	}
	return c, nil
}

// publicCluster strips what must never leave the managers.
func publicCluster(c *shoalv1.Cluster) *shoalv1.Cluster {
	out := proto.Clone(c).(*shoalv1.Cluster)
	out.CaKeyPem = nil
	out.GossipKeys = nil // nodes get them on their session only
	for i, t := range out.ApiTokens {
		out.ApiTokens[i] = redactToken(t)
	}
	return out
}

// GetCluster returns the cluster object (without the CA key) and the raft
// membership.
func (s *Server) GetCluster(ctx context.Context, _ *shoalv1.GetClusterRequest) (*shoalv1.GetClusterResponse, error) {
	r, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	c, err := clusterOf(r)
	if err != nil {
		return nil, err
	}
	resp := &shoalv1.GetClusterResponse{Cluster: publicCluster(c)}
	if callerBelowAdmin(ctx) {
		// A join token makes a node; a viewer or operator token must not.
		resp.Cluster.Tokens = nil
	}
	members, err := s.store.Members()
	if err != nil {
		return nil, err
	}
	for _, m := range members {
		resp.Members = append(resp.Members, &shoalv1.RaftMember{NodeId: m.ID, Addr: m.Addr, Suffrage: m.Suffrage})
		if m.Leader {
			resp.LeaderId = m.ID
		}
	}
	s.setTermHeader(ctx)
	return resp, nil
}

// RotateJoinToken replaces the worker or manager join token. Nodes that
// already joined are unaffected; the old token stops working at once.
func (s *Server) RotateJoinToken(ctx context.Context, req *shoalv1.RotateJoinTokenRequest) (*shoalv1.RotateJoinTokenResponse, error) {
	var token string
	_, err := s.store.Update(ctx, func(tx raftstore.WriteTx) error {
		c, err := clusterOf(tx)
		if err != nil {
			return err
		}
		digest, err := trust.DigestOf(c.GetCaCertPem())
		if err != nil {
			return err
		}
		token, err = trust.NewJoinToken(digest)
		if err != nil {
			return err
		}
		c = proto.Clone(c).(*shoalv1.Cluster)
		if c.Tokens == nil {
			c.Tokens = &shoalv1.JoinTokens{}
		}
		switch req.GetRole() {
		case shoalv1.NodeRole_NODE_ROLE_WORKER:
			c.Tokens.Worker = token
		case shoalv1.NodeRole_NODE_ROLE_MANAGER:
			c.Tokens.Manager = token
		default:
			return errdefs.InvalidArgumentf("role: must be worker or manager")
		}
		return tx.Update(c)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("join token rotated", "role", req.GetRole().String())
	return &shoalv1.RotateJoinTokenResponse{Token: token}, nil
}

// Watch streams store changes. Cluster events are stripped as GetCluster
// strips the cluster (publicCluster; join tokens below an admin token).
func (s *Server) Watch(req *shoalv1.WatchRequest, stream shoalv1.Control_WatchServer) error {
	kinds := make([]raftstore.Kind, 0, len(req.GetKinds()))
	for _, k := range req.GetKinds() {
		kind := raftstore.Kind(k)
		if !knownKind(kind) {
			return errdefs.InvalidArgumentf("kinds: unknown kind %q", k)
		}
		kinds = append(kinds, kind)
	}
	sub, err := s.store.Watch(stream.Context(), req.GetFromIndex(), kinds...)
	if err != nil {
		return err
	}
	defer sub.Close()
	// Headers at once, now the call is accepted (a refusal above still
	// ends with no headers, and keeps its HTTP status through the
	// gateway): a quiet watch may send nothing for a long time, and its
	// caller — a dashboard's "live" badge — should know it is open.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	// As GetCluster: a viewer or operator token (Watch is a viewer's
	// right) must not read the join tokens, which make nodes, nor anyone
	// the API tokens' hashes.
	belowAdmin := callerBelowAdmin(stream.Context())
	// And a viewer token reads no environment values (viewService).
	viewer := callerIsViewer(stream.Context())
	for ev := range sub.C() {
		ev = viewEvent(viewer, ev)
		if c := ev.GetObject().GetCluster(); c != nil {
			ev = proto.Clone(ev).(*shoalv1.WatchEvent)
			pc := publicCluster(c)
			if belowAdmin {
				pc.Tokens = nil
			}
			ev.Object.Object = &shoalv1.StoreObject_Cluster{Cluster: pc}
		}
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	if err := sub.Err(); err != nil && stream.Context().Err() == nil {
		return err
	}
	return nil
}

func knownKind(k raftstore.Kind) bool {
	for _, kk := range raftstore.Kinds {
		if kk == k {
			return true
		}
	}
	return false
}
