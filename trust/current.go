package trust

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// A certificate is only as good as the store says: these checks compare
// what a verified certificate claims with the node or admin object the
// cluster keeps, and are shared by every place that admits a peer (the
// manager's gRPC port, raft connections, agent APIs).

// ErrNodeUnknown is returned (wrapped) for a node id the store has never
// heard of: a lagging manager, or a join not yet committed. Unlike
// ErrNodeRemoved it is worth retrying elsewhere.
var ErrNodeUnknown = errors.New("node not known")

// ErrNotCurrent is returned (wrapped) for a certificate that the store no
// longer honours: an older serial, a role the node no longer has, a
// revoked or unknown admin certificate.
var ErrNotCurrent = errors.New("certificate no longer accepted")

// NodeLookup is what the node checks need of the store: the node object
// (nil when not found) and whether the id was removed with `node rm`.
type NodeLookup func(nodeID string) (n *shoalv1.Node, removed bool)

// CurrentNodeRole decides whether the node certificate id is still current
// for node n (nil: not in the store) and returns the role its holder may
// act as now:
//
//   - a removed node is refused (ErrNodeRemoved), an unknown one too
//     (ErrNodeUnknown);
//   - the serial must be the node's current certificate's, or the one
//     that a renewal with the same role replaced (previous_cert_serial,
//     so connections made just before a renewal keep working);
//   - the certificate's role must be the node's current role;
//   - while a role change is pending (the operator demoted or promoted the
//     node, which has not renewed yet), the holder acts as a worker: a
//     demoted manager loses the Control API, raft and the agent APIs at
//     once, but keeps its dispatcher session and may renew.
func CurrentNodeRole(id Identity, n *shoalv1.Node, removed bool) (Role, error) {
	return currentNodeRole(id, n, removed, true)
}

// CurrentNodeRoleOfConnection is CurrentNodeRole without the serial check,
// for a long-lived connection whose certificate was current when it was
// admitted (raft): renewals, which keep the role, do not cut it, while a
// demotion or removal still does at once.
func CurrentNodeRoleOfConnection(id Identity, n *shoalv1.Node, removed bool) (Role, error) {
	return currentNodeRole(id, n, removed, false)
}

func currentNodeRole(id Identity, n *shoalv1.Node, removed, checkSerial bool) (Role, error) {
	if id.Role != RoleManager && id.Role != RoleWorker {
		return "", fmt.Errorf("%w: %s is not a node certificate", ErrNotCurrent, id)
	}
	if removed {
		return "", fmt.Errorf("node %q: %w", id.NodeID, ErrNodeRemoved)
	}
	if n == nil {
		return "", fmt.Errorf("node %q: %w", id.NodeID, ErrNodeUnknown)
	}
	switch {
	case !checkSerial:
	case id.Serial != "" && id.Serial == n.GetCertSerial():
	case id.Serial != "" && id.Serial == n.GetPreviousCertSerial():
	default:
		return "", fmt.Errorf("%w: certificate %s of node %q is not its current certificate (it was replaced by a renewal or role change)", ErrNotCurrent, id.Serial, id.NodeID)
	}
	if cur := RoleFromProto(n.GetRole()); cur != id.Role {
		return "", fmt.Errorf("%w: the certificate says %s but node %q is a %s", ErrNotCurrent, id.Role, id.NodeID, cur)
	}
	if want := RoleFromProto(n.GetSpec().GetDesiredRole()); want != "" && want != id.Role {
		return RoleWorker, nil
	}
	return id.Role, nil
}

// CheckAdmin decides whether the admin certificate id is still honoured:
// its serial must be listed in the cluster's admin certificates under its
// name, not revoked and not expired at now.
func CheckAdmin(id Identity, admins []*shoalv1.AdminCertificate, now time.Time) error {
	if id.Role != RoleAdmin {
		return fmt.Errorf("%w: %s is not an admin certificate", ErrNotCurrent, id)
	}
	for _, a := range admins {
		if a.GetSerial() != id.Serial || id.Serial == "" {
			continue
		}
		switch {
		case a.GetName() != id.NodeID:
			return fmt.Errorf("%w: admin certificate %s is listed as %q, not %q", ErrNotCurrent, id.Serial, a.GetName(), id.NodeID)
		case a.GetRevoked():
			return fmt.Errorf("%w: admin certificate %q was revoked", ErrNotCurrent, id.NodeID)
		case a.GetNotAfter() != nil && now.After(a.GetNotAfter().AsTime()):
			return fmt.Errorf("%w: admin certificate %q expired", ErrNotCurrent, id.NodeID)
		}
		return nil
	}
	return fmt.Errorf("%w: admin certificate %q (serial %s) is not one of the cluster's admin certificates", ErrNotCurrent, id.NodeID, id.Serial)
}

// AdminLookup returns the cluster's admin certificates; known is false
// while the cluster object is not in the store yet (bootstrap), which is
// worth retrying rather than a refusal.
type AdminLookup func() (admins []*shoalv1.AdminCertificate, known bool)

// errBootstrapping is retryable (the authorizer answers UNAVAILABLE).
var errBootstrapping = errors.New("the cluster is still being bootstrapped")

// StoreCheck returns the check an Authorizer (or a raft gate) applies on a
// manager: nodes against lookup, admins against the cluster's list.
func StoreCheck(lookup NodeLookup, admins AdminLookup) func(Identity) (Role, error) {
	return func(id Identity) (Role, error) {
		if id.Role == RoleAdmin {
			list, known := admins()
			if !known {
				return "", errBootstrapping
			}
			if err := CheckAdmin(id, list, time.Now()); err != nil {
				return "", err
			}
			return RoleAdmin, nil
		}
		n, removed := lookup(id.NodeID)
		if n == nil && !removed {
			if _, known := admins(); !known {
				// No cluster state at all yet. Still ErrNodeUnknown: the
				// raft gate admits the voters it does not know yet, which
				// is how managers restarted together elect a leader.
				return "", fmt.Errorf("node %q: %w (%w)", id.NodeID, ErrNodeUnknown, errBootstrapping)
			}
		}
		return CurrentNodeRole(id, n, removed)
	}
}

// StoreCheckOngoing is StoreCheck for streams and connections already
// admitted: node certificates are checked without their serial (see
// CurrentNodeRoleOfConnection), admin certificates as by StoreCheck.
func StoreCheckOngoing(lookup NodeLookup, admins AdminLookup) func(Identity) (Role, error) {
	nodes := ConnectionCheck(lookup)
	full := StoreCheck(lookup, admins)
	return func(id Identity) (Role, error) {
		if id.Role == RoleAdmin {
			return full(id)
		}
		return nodes(id)
	}
}

// ConnectionCheck is StoreCheck for connections already admitted (see
// CurrentNodeRoleOfConnection); it knows nodes only.
func ConnectionCheck(lookup NodeLookup) func(Identity) (Role, error) {
	return func(id Identity) (Role, error) {
		n, removed := lookup(id.NodeID)
		return CurrentNodeRoleOfConnection(id, n, removed)
	}
}

// AdminCertificateOf is the object the cluster keeps for an admin
// certificate it issued (`shoal init`'s, `shoal admin-cert create`).
func AdminCertificateOf(certPEM []byte) (*shoalv1.AdminCertificate, error) {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("admin certificate: %w", err)
	}
	id, err := IdentityFromCert(cert)
	if err != nil {
		return nil, err
	}
	if id.Role != RoleAdmin {
		return nil, fmt.Errorf("admin certificate: %s is not an admin certificate", id)
	}
	return &shoalv1.AdminCertificate{Name: id.NodeID, Serial: id.Serial,
		CreatedAt: timestamppb.New(IssuedAt(cert)), NotAfter: timestamppb.New(cert.NotAfter)}, nil
}

// CachedCurrent wraps a check that is costly (it asks a manager over the
// network: agent APIs) so that answers that admit a caller are reused for
// ttl; refusals and errors are never cached. ttl bounds how long a demoted
// or removed caller can still be admitted.
func CachedCurrent(check func(context.Context, Identity) (Role, error), ttl time.Duration) func(context.Context, Identity) (Role, error) {
	type entry struct {
		role Role
		at   time.Time
	}
	var mu sync.Mutex // guards cache
	cache := map[Identity]entry{}
	return func(ctx context.Context, id Identity) (Role, error) {
		now := time.Now()
		mu.Lock()
		e, ok := cache[id]
		if len(cache) > 1024 { // a bound, not a policy: callers are few
			clear(cache)
		}
		mu.Unlock()
		if ok && now.Sub(e.at) < ttl {
			return e.role, nil
		}
		role, err := check(ctx, id)
		mu.Lock()
		if err == nil {
			cache[id] = entry{role: role, at: now}
		} else {
			delete(cache, id)
		}
		mu.Unlock()
		return role, err
	}
}
