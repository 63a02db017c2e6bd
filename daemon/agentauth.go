package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/grpc"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// The agent API (task logs, images) admits a caller only while the
// cluster's store says its certificate is current, like the managers do.
// A worker has no store, so it asks a manager (leader first; followers
// forward reads to the leader): Control.GetNode for a node caller,
// Control.ListAdminCertificates for an admin. Answers that admit are
// cached briefly (agentAuthCacheTTL), so a demoted or removed manager, or
// a revoked admin, is refused within about that long.

// agentAuthCacheTTL bounds how long an admitted caller is not asked about
// again.
const agentAuthCacheTTL = 500 * time.Millisecond

// agentAPICheck returns the agent API's certificate checks: for new calls,
// and for streams in progress (which a renewal of the caller's certificate
// does not end).
func (n *node) agentAPICheck() (current, ongoing func(context.Context, trust.Identity) (trust.Role, error)) {
	return trust.CachedCurrent(func(ctx context.Context, id trust.Identity) (trust.Role, error) { return n.askManagers(ctx, id, true) }, agentAuthCacheTTL),
		trust.CachedCurrent(func(ctx context.Context, id trust.Identity) (trust.Role, error) { return n.askManagers(ctx, id, false) }, agentAuthCacheTTL)
}

// askManagers asks the managers, in turn, whether id is current (its
// serial too, if checkSerial).
func (n *node) askManagers(ctx context.Context, id trust.Identity, checkSerial bool) (trust.Role, error) {
	st := n.state()
	targets := append([]string{}, st.Managers...)
	if len(targets) == 0 {
		targets = append(targets, st.AdvertiseAddr)
	}
	var lastErr error
	for _, addr := range targets {
		role, err := n.askManager(ctx, addr, id, checkSerial)
		if err == nil || errors.Is(err, trust.ErrNotCurrent) || errors.Is(err, trust.ErrNodeRemoved) {
			return role, err
		}
		lastErr = fmt.Errorf("asking %s: %w", addr, err)
	}
	return "", fmt.Errorf("no manager could say whether %s is current: %w", id, lastErr)
}

func (n *node) askManager(ctx context.Context, addr string, id trust.Identity, checkSerial bool) (trust.Role, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(trust.ClientCreds(n.certs)))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	control := shoalv1.NewControlClient(conn)
	if id.Role == trust.RoleAdmin {
		resp, err := control.ListAdminCertificates(cctx, &shoalv1.ListAdminCertificatesRequest{})
		if err != nil {
			return "", err
		}
		if err := trust.CheckAdmin(id, resp.GetAdmins(), time.Now()); err != nil {
			return "", err
		}
		return trust.RoleAdmin, nil
	}
	resp, err := control.GetNode(cctx, &shoalv1.GetNodeRequest{Ref: id.NodeID})
	if errdefs.IsNotFound(err) {
		return "", fmt.Errorf("%w: node %q is not a node of this cluster", trust.ErrNotCurrent, id.NodeID)
	}
	if err != nil {
		return "", err
	}
	nd := resp.GetNode()
	if nd.GetMeta().GetId() != id.NodeID { // a ref may also match a name or a prefix
		return "", fmt.Errorf("%w: node %q is not a node of this cluster", trust.ErrNotCurrent, id.NodeID)
	}
	if !checkSerial {
		return trust.CurrentNodeRoleOfConnection(id, nd, false)
	}
	return trust.CurrentNodeRole(id, nd, false)
}
