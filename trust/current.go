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
		return checkAdminEntry(id, a, now)
	}
	return notAnAdmin(id)
}

// checkAdminEntry is CheckAdmin's verdict on the entry listed under id's
// serial.
func checkAdminEntry(id Identity, a *shoalv1.AdminCertificate, now time.Time) error {
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

func notAnAdmin(id Identity) error {
	return fmt.Errorf("%w: admin certificate %q (serial %s) is not one of the cluster's admin certificates", ErrNotCurrent, id.NodeID, id.Serial)
}

// AdminIndex is the cluster's admin certificates by serial, built once
// from a list (IndexAdmins) and then read by every call: CheckAdmin scans
// the list, and a manager checks an admin on each API call. It is
// immutable once built (safe to share between goroutines). Its verdicts
// are CheckAdmin's over the same list; the expiry is still decided per
// call, against the caller's now.
type AdminIndex struct {
	bySerial map[string]*shoalv1.AdminCertificate
}

// IndexAdmins indexes admins by serial. Where two entries share a serial
// the first one counts, as in CheckAdmin's scan; entries without a serial
// are never matched (an empty serial admits nobody).
func IndexAdmins(admins []*shoalv1.AdminCertificate) *AdminIndex {
	x := &AdminIndex{bySerial: make(map[string]*shoalv1.AdminCertificate, len(admins))}
	for _, a := range admins {
		s := a.GetSerial()
		if _, dup := x.bySerial[s]; s == "" || dup {
			continue
		}
		x.bySerial[s] = a
	}
	return x
}

// Check is CheckAdmin against the indexed list: one map lookup.
func (x *AdminIndex) Check(id Identity, now time.Time) error {
	if id.Role != RoleAdmin {
		return fmt.Errorf("%w: %s is not an admin certificate", ErrNotCurrent, id)
	}
	var a *shoalv1.AdminCertificate
	if x != nil && id.Serial != "" {
		a = x.bySerial[id.Serial]
	}
	if a == nil {
		return notAnAdmin(id)
	}
	return checkAdminEntry(id, a, now)
}

// AdminLookup returns the cluster's admin certificates; known is false
// while the cluster object is not in the store yet (bootstrap), which is
// worth retrying rather than a refusal.
type AdminLookup func() (admins []*shoalv1.AdminCertificate, known bool)

// errBootstrapping is retryable (the authorizer answers UNAVAILABLE).
var errBootstrapping = errors.New("the cluster is still being bootstrapped")

// AdminIndexLookup is AdminLookup returning the list indexed (see
// transport.CachedAdmins: the index is built again only when the cluster
// object may have changed).
type AdminIndexLookup func() (admins *AdminIndex, known bool)

// StoreCheck returns the check an Authorizer (or a raft gate) applies on a
// manager: nodes against lookup, admins against the cluster's list.
func StoreCheck(lookup NodeLookup, admins AdminLookup) func(Identity) (Role, error) {
	return storeCheck(lookup, func(id Identity) (bool, error) {
		list, known := admins()
		if !known {
			return false, nil
		}
		return true, CheckAdmin(id, list, time.Now())
	})
}

// StoreCheckIndexed is StoreCheck with the admin certificates looked up in
// an index (one map lookup per call instead of a scan of the list).
func StoreCheckIndexed(lookup NodeLookup, admins AdminIndexLookup) func(Identity) (Role, error) {
	return storeCheck(lookup, func(id Identity) (bool, error) {
		x, known := admins()
		if !known {
			return false, nil
		}
		return true, x.Check(id, time.Now())
	})
}

// storeCheck is StoreCheck with admins deciding an admin certificate; its
// known is false while there is no cluster object (bootstrap). For a node
// id it is asked only whether the cluster is known (id's role is not an
// admin's: its error is ignored).
func storeCheck(lookup NodeLookup, admin func(Identity) (known bool, err error)) func(Identity) (Role, error) {
	return func(id Identity) (Role, error) {
		if id.Role == RoleAdmin {
			known, err := admin(id)
			if !known {
				return "", errBootstrapping
			}
			if err != nil {
				return "", err
			}
			return RoleAdmin, nil
		}
		n, removed := lookup(id.NodeID)
		if n == nil && !removed {
			if known, _ := admin(id); !known {
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
	return ongoingCheck(lookup, StoreCheck(lookup, admins))
}

// StoreCheckOngoingIndexed is StoreCheckOngoing over an admin index.
func StoreCheckOngoingIndexed(lookup NodeLookup, admins AdminIndexLookup) func(Identity) (Role, error) {
	return ongoingCheck(lookup, StoreCheckIndexed(lookup, admins))
}

func ongoingCheck(lookup NodeLookup, full func(Identity) (Role, error)) func(Identity) (Role, error) {
	nodes := ConnectionCheck(lookup)
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
