// Package nodeca implements the shoal.v1.NodeCA service: it hands out the
// cluster's root certificate and signs node certificates for holders of a
// valid join token (a new node) or of a valid node certificate (a renewal,
// which is also how a promoted or demoted node gets its new role). A
// manager token admits only a node whose description reports the raft
// store format the managers write (raftstore.StoreFormat).
//
// Calls that write run on the leader (the forwarding interceptor sends them
// there); the CA key lives in the replicated cluster object.
package nodeca

import (
	"context"
	"log/slog"
	"time"

	"github.com/shoal-dev/shoal/errdefs"
	"github.com/shoal-dev/shoal/specrules"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

// DefaultCertTTL is a node certificate's lifetime unless the cluster says
// otherwise.
const DefaultCertTTL = specrules.DefaultNodeCertExpiry

// Server implements shoalv1.NodeCAServer.
type Server struct {
	shoalv1.UnimplementedNodeCAServer
	store *raftstore.Store
	log   *slog.Logger
}

// New returns the NodeCA service.
func New(store *raftstore.Store, logger *slog.Logger) *Server {
	return &Server{store: store, log: logger.With("component", "nodeca")}
}

func (s *Server) cluster() (*shoalv1.Cluster, error) {
	c, ok := raftstore.ClusterOf(s.store.View())
	if !ok {
		return nil, errdefs.Unavailablef("the cluster is still being bootstrapped")
	}
	return c, nil
}

func certTTL(c *shoalv1.Cluster) time.Duration {
	if ms := c.GetSettings().GetNodeCertExpiryMs(); ms > 0 {
		return time.Duration(ms) * time.Millisecond
	}
	return DefaultCertTTL
}

// GetRootCA returns the CA certificate. It needs no credentials: the joiner
// checks it against the digest in its token.
func (s *Server) GetRootCA(context.Context, *shoalv1.GetRootCARequest) (*shoalv1.GetRootCAResponse, error) {
	c, err := s.cluster()
	if err != nil {
		return nil, err
	}
	return &shoalv1.GetRootCAResponse{CaCertPem: c.GetCaCertPem()}, nil
}

// IssueNodeCertificate admits a new node: the token decides its role.
func (s *Server) IssueNodeCertificate(ctx context.Context, req *shoalv1.IssueNodeCertificateRequest) (*shoalv1.IssueNodeCertificateResponse, error) {
	c, err := s.cluster()
	if err != nil {
		return nil, err
	}
	role, err := tokenRole(c, req.GetToken())
	if err != nil {
		return nil, err
	}
	root, err := trust.LoadCA(c.GetCaCertPem(), c.GetCaKeyPem())
	if err != nil {
		return nil, errdefs.Internalf("loading the cluster CA: %v", err)
	}
	// A manager of an older release would misapply the raft log's newer
	// entry forms (raftstore.StoreFormat): it joins once upgraded.
	if f := req.GetDescription().GetStoreFormat(); role == trust.RoleManager && f < raftstore.StoreFormat {
		return nil, errdefs.FailedPreconditionf("description.store_format: %d; a manager must read raft store format %d (run this release on the node to join it as a manager)", f, raftstore.StoreFormat)
	}
	nodeID := raftstore.NewID()
	certPEM, serial, err := root.SignCSR(req.GetCsrPem(), nodeID, role, certTTL(c))
	if err != nil {
		return nil, errdefs.InvalidArgumentf("csr_pem: %v", err)
	}
	node := &shoalv1.Node{
		Meta:        &shoalv1.Meta{Id: nodeID},
		Spec:        &shoalv1.NodeSpec{DesiredRole: role.Proto(), Availability: shoalv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE},
		Description: req.GetDescription(),
		Status: &shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_UNKNOWN, Addr: req.GetAddr(),
			Message: "joined", LastHeartbeat: timestamppb.Now()},
		Role:       role.Proto(),
		CertSerial: serial,
	}
	if _, err := s.store.Update(ctx, func(tx raftstore.WriteTx) error { return tx.Create(node) }); err != nil {
		return nil, err
	}
	s.log.Info("node joined", "node_id", nodeID, "role", string(role), "addr", req.GetAddr())
	return &shoalv1.IssueNodeCertificateResponse{NodeId: nodeID, CertPem: certPEM, CaCertPem: c.GetCaCertPem(), Role: role.Proto()}, nil
}

// tokenRole checks a join token against the cluster's current tokens.
func tokenRole(c *shoalv1.Cluster, token string) (trust.Role, error) {
	digest, _, err := trust.ParseJoinToken(token)
	if err != nil {
		return "", errdefs.InvalidArgument(err)
	}
	want, err := trust.DigestOf(c.GetCaCertPem())
	if err != nil {
		return "", errdefs.Internalf("cluster CA: %v", err)
	}
	if digest != want {
		return "", errdefs.PermissionDeniedf("the join token pins a different CA than this cluster's")
	}
	switch {
	case trust.TokenEqual(token, c.GetTokens().GetWorker()):
		return trust.RoleWorker, nil
	case trust.TokenEqual(token, c.GetTokens().GetManager()):
		return trust.RoleManager, nil
	}
	return "", errdefs.PermissionDeniedf("the join token is not valid for this cluster (was it rotated?)")
}

// RenewNodeCertificate signs a new certificate for the calling node with the
// role the operator wants for it (promote / demote change that role; a
// renewal with the same role keeps it).
//
// The node is the direct peer, never one named in forwarding metadata (the
// call is not forwarded: a follower answers UNAVAILABLE and the node asks
// the next manager). A node presents its current certificate; one whose
// certificate has expired cannot (TLS refuses it) and connects without one,
// sending the old certificate and a signature by its key over the request
// instead, accepted while that certificate is still the node's current one
// and expired less than its renewal window ago.
func (s *Server) RenewNodeCertificate(ctx context.Context, req *shoalv1.RenewNodeCertificateRequest) (*shoalv1.IssueNodeCertificateResponse, error) {
	c, err := s.cluster()
	if err != nil {
		return nil, err
	}
	root, err := trust.LoadCA(c.GetCaCertPem(), c.GetCaKeyPem())
	if err != nil {
		return nil, errdefs.Internalf("loading the cluster CA: %v", err)
	}
	id, ok := trust.IdentityFrom(ctx)
	proof := false
	switch {
	case ok && id.Role == trust.RoleAdmin:
		return nil, errdefs.PermissionDeniedf("only nodes renew node certificates")
	case ok:
	case len(req.GetOldCertPem()) > 0:
		if id, err = root.VerifyRenewalProof(req.GetOldCertPem(), req.GetOldKeySignature(), req.GetCsrPem(), time.Now()); err != nil {
			return nil, errdefs.PermissionDenied(err)
		}
		proof = true
	default:
		return nil, errdefs.Unauthenticatedf("renewing a node certificate needs the node's current certificate, or old_cert_pem and old_key_signature for an expired one")
	}
	var resp *shoalv1.IssueNodeCertificateResponse
	_, err = s.store.Update(ctx, func(tx raftstore.WriteTx) error {
		n, ok := raftstore.Get[*shoalv1.Node](tx, id.NodeID)
		if !ok {
			return errdefs.NodeRemovedf("node %q %s", id.NodeID, trust.RemovedReason)
		}
		if proof && (id.Serial != n.GetCertSerial() || trust.RoleFromProto(n.GetRole()) != id.Role) {
			// Only the newest certificate may come back from expiry: an
			// older one was replaced, maybe because it leaked.
			return errdefs.PermissionDeniedf("old_cert_pem: certificate %s is not node %q's current certificate", id.Serial, id.NodeID)
		}
		role := trust.RoleFromProto(n.GetSpec().GetDesiredRole())
		certPEM, serial, err := root.SignCSR(req.GetCsrPem(), id.NodeID, role, certTTL(c))
		if err != nil {
			return errdefs.InvalidArgumentf("csr_pem: %v", err)
		}
		n = proto.Clone(n).(*shoalv1.Node)
		// Connections made with the certificate being replaced keep
		// working for one more renewal, unless the role changes: then the
		// old certificate's role is wrong and it goes at once.
		n.PreviousCertSerial = ""
		if role.Proto() == n.GetRole() && n.GetCertSerial() != "" {
			n.PreviousCertSerial = n.GetCertSerial()
		}
		n.Role = role.Proto()
		n.CertSerial = serial
		resp = &shoalv1.IssueNodeCertificateResponse{NodeId: id.NodeID, CertPem: certPEM, CaCertPem: c.GetCaCertPem(), Role: role.Proto()}
		return tx.Update(n)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("node certificate renewed", "node_id", id.NodeID, "role", resp.GetRole().String(), "expired", proof)
	return resp, nil
}
