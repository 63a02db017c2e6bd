// Package netdelta is the one definition of a network state's delta
// (shoalv1.NetworkDelta), for the manager that makes it (Diff) and the
// agent that applies it (Apply): Apply(prev, Diff(prev, next)) is next,
// equal field for field and in the same order.
//
// Why: a node's state of an overlay network lists every endpoint on it.
// Sent whole after every change, a rollout of N tasks over N nodes sent
// each node N states of up to N endpoints — O(N³) bytes from the leader,
// which at 400 agents spent 55 % of its CPU marshalling and encrypting
// them and at 1,000 never brought the service up (docs/performance.md,
// fifteenth round). A delta carries what changed: one endpoint when one
// task moved.
//
// The order both sides keep: a state's endpoints are sorted by task id and
// its VIPs by service id, each id once (the manager builds them so:
// dispatcher.AllNodeNetworks lists tasks and services in id order, and a
// task names a network once). Diff refuses (returns nil) a pair that is
// not so ordered, whose network object changed, or whose changes are as
// many or as large (encoded) as the state itself: the caller then sends
// next whole.
//
// Apply checks what it is given against the state it holds: an upsert out
// of order, a removal of an endpoint it does not hold, or counts that end
// up other than the delta's say the agent's state is not the manager's,
// and it returns an error (the agent ends its session; the next starts
// from a full set).
package netdelta

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Diff returns the delta that turns prev into next (both states of the
// same network), an empty one (Empty) if they are equal, or nil if next is
// better sent whole (see the package comment).
func Diff(prev, next *shoalv1.NetworkState) *shoalv1.NetworkDelta {
	if prev == nil || next == nil {
		return nil
	}
	if pn, nn := prev.GetNetwork(), next.GetNetwork(); pn != nn && !proto.Equal(pn, nn) {
		return nil
	}
	if !sorted(prev.GetEndpoints(), epKey) || !sorted(next.GetEndpoints(), epKey) ||
		!sorted(prev.GetVips(), vipKey) || !sorted(next.GetVips(), vipKey) {
		return nil
	}
	d := &shoalv1.NetworkDelta{
		NetworkId: next.GetNetwork().GetMeta().GetId(),
		Endpoints: uint32(len(next.GetEndpoints())),
		Vips:      uint32(len(next.GetVips())),
	}
	d.Upsert, d.Removed = merge(prev.GetEndpoints(), next.GetEndpoints(), epKey, endpointEqual)
	d.VipsUpsert, d.VipsRemoved = merge(prev.GetVips(), next.GetVips(), vipKey, vipEqual)
	// A delta is worth it while it lists fewer entries than the state it
	// stands for, and is smaller: a removal is an id, smaller than an
	// endpoint, but a scale-down from 1,000 endpoints to 10 removes 990.
	if n := len(d.Upsert) + len(d.VipsUpsert); n > 0 && n >= len(next.GetEndpoints())+len(next.GetVips()) {
		return nil
	}
	if !Empty(d) {
		// The ids alone bound next's size from below; only a delta
		// past that bound pays for sizing next.
		if size := proto.Size(d); size >= minSize(next) && size >= proto.Size(next) {
			return nil
		}
	}
	return d
}

// minSize is a lower bound of proto.Size(s): each endpoint and VIP holds
// its id, a tag and a length.
func minSize(s *shoalv1.NetworkState) int {
	n := 0
	for _, e := range s.GetEndpoints() {
		n += len(e.GetTaskId()) + 2
	}
	for _, v := range s.GetVips() {
		n += len(v.GetServiceId()) + 2
	}
	return n
}

// Equal is proto.Equal for network states, cheaper: the network by
// pointer or proto.Equal, then endpoints and VIPs field by field
// (endpointEqual). The dispatcher compares each new state with the one
// before it for every node (dispatcher.keepUnchanged).
func Equal(a, b *shoalv1.NetworkState) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil {
		return false
	}
	if an, bn := a.GetNetwork(), b.GetNetwork(); an != bn && !proto.Equal(an, bn) {
		return false
	}
	return slices.EqualFunc(a.GetEndpoints(), b.GetEndpoints(), func(x, y *shoalv1.Endpoint) bool { return x == y || endpointEqual(x, y) }) &&
		slices.EqualFunc(a.GetVips(), b.GetVips(), func(x, y *shoalv1.ServiceVIPState) bool { return x == y || vipEqual(x, y) }) &&
		len(a.ProtoReflect().GetUnknown()) == 0 && len(b.ProtoReflect().GetUnknown()) == 0
}

// Empty says whether d changes nothing.
func Empty(d *shoalv1.NetworkDelta) bool {
	return len(d.GetUpsert()) == 0 && len(d.GetRemoved()) == 0 && len(d.GetVipsUpsert()) == 0 && len(d.GetVipsRemoved()) == 0
}

// Apply returns base with d applied, as a new state (base and what it
// holds are shared, never changed: the reconciler may still read them).
func Apply(base *shoalv1.NetworkState, d *shoalv1.NetworkDelta) (*shoalv1.NetworkState, error) {
	id := base.GetNetwork().GetMeta().GetId()
	if d.GetNetworkId() != id {
		return nil, fmt.Errorf("delta of network %q applied to network %q", d.GetNetworkId(), id)
	}
	eps, err := apply(base.GetEndpoints(), d.GetUpsert(), d.GetRemoved(), epKey)
	if err != nil {
		return nil, fmt.Errorf("network %q: endpoints: %w", id, err)
	}
	vips, err := apply(base.GetVips(), d.GetVipsUpsert(), d.GetVipsRemoved(), vipKey)
	if err != nil {
		return nil, fmt.Errorf("network %q: vips: %w", id, err)
	}
	if len(eps) != int(d.GetEndpoints()) || len(vips) != int(d.GetVips()) {
		return nil, fmt.Errorf("network %q: %d endpoints and %d vips once applied, the manager has %d and %d",
			id, len(eps), len(vips), d.GetEndpoints(), d.GetVips())
	}
	return &shoalv1.NetworkState{Network: base.GetNetwork(), Endpoints: eps, Vips: vips}, nil
}

func epKey(e *shoalv1.Endpoint) string         { return e.GetTaskId() }
func vipKey(v *shoalv1.ServiceVIPState) string { return v.GetServiceId() }

// sorted says whether xs are in strictly increasing key order.
func sorted[T any](xs []T, key func(T) string) bool {
	for i := 1; i < len(xs); i++ {
		if key(xs[i-1]) >= key(xs[i]) {
			return false
		}
	}
	return true
}

// merge walks two sorted lists: what is in next and not in prev, or in
// both and different, is upserted; what is only in prev is removed.
func merge[T comparable](prev, next []T, key func(T) string, equal func(a, b T) bool) (upsert []T, removed []string) {
	i, j := 0, 0
	for i < len(prev) || j < len(next) {
		switch {
		case j == len(next) || i < len(prev) && key(prev[i]) < key(next[j]):
			removed = append(removed, key(prev[i]))
			i++
		case i == len(prev) || key(next[j]) < key(prev[i]):
			upsert = append(upsert, next[j])
			j++
		default:
			if prev[i] != next[j] && !equal(prev[i], next[j]) {
				upsert = append(upsert, next[j])
			}
			i++
			j++
		}
	}
	return upsert, removed
}

// apply merges sorted upserts into sorted base, less the removed keys. An
// upsert out of order, or a removal of a key base lacks (or that is
// upserted too), is an error.
func apply[T any](base, upsert []T, removed []string, key func(T) string) ([]T, error) {
	if !sorted(upsert, key) {
		return nil, fmt.Errorf("upserts not in strictly increasing id order")
	}
	gone := make(map[string]bool, len(removed))
	for _, k := range removed {
		if gone[k] {
			return nil, fmt.Errorf("%q removed twice", k)
		}
		gone[k] = true
	}
	out := make([]T, 0, len(base)+len(upsert)-len(removed))
	found := 0
	j := 0
	for _, b := range base {
		k := key(b)
		for j < len(upsert) && key(upsert[j]) < k {
			if gone[key(upsert[j])] {
				return nil, fmt.Errorf("%q both upserted and removed", key(upsert[j]))
			}
			out = append(out, upsert[j])
			j++
		}
		switch {
		case gone[k]:
			found++
		case j < len(upsert) && key(upsert[j]) == k:
			out = append(out, upsert[j])
			j++
		default:
			out = append(out, b)
		}
	}
	for ; j < len(upsert); j++ {
		if gone[key(upsert[j])] {
			return nil, fmt.Errorf("%q both upserted and removed", key(upsert[j]))
		}
		out = append(out, upsert[j])
	}
	if found != len(gone) {
		var missing []string
		have := make(map[string]bool, len(base))
		for _, b := range base {
			have[key(b)] = true
		}
		for _, k := range removed {
			if !have[k] {
				missing = append(missing, k)
			}
		}
		return nil, fmt.Errorf("removal of %s, not held", strings.Join(missing, ", "))
	}
	return out, nil
}

// endpointEqual is proto.Equal for endpoints, field by field: Diff
// compares every endpoint of a network once per pair of states, and
// proto.Equal's reflection took 600 µs for 1,000 endpoints, more than
// marshalling the whole state (found in review). A field added to
// Endpoint must be added here: TestEqualComparesEveryField changes each
// field the descriptor lists and fails on one not compared.
func endpointEqual(a, b *shoalv1.Endpoint) bool {
	return a.GetTaskId() == b.GetTaskId() && a.GetServiceId() == b.GetServiceId() &&
		a.GetServiceName() == b.GetServiceName() && slices.Equal(a.GetAliases(), b.GetAliases()) &&
		a.GetAddress() == b.GetAddress() && a.GetMac() == b.GetMac() && a.GetNodeId() == b.GetNodeId() &&
		a.GetNodeAddr() == b.GetNodeAddr() && a.GetState() == b.GetState() && a.GetHealth() == b.GetHealth() &&
		len(a.ProtoReflect().GetUnknown()) == 0 && len(b.ProtoReflect().GetUnknown()) == 0
}

// vipEqual is proto.Equal for VIP states, field by field (see
// endpointEqual); ports are few and compared by proto.Equal.
func vipEqual(a, b *shoalv1.ServiceVIPState) bool {
	return a.GetServiceId() == b.GetServiceId() && a.GetServiceName() == b.GetServiceName() &&
		slices.Equal(a.GetAliases(), b.GetAliases()) && a.GetAddress() == b.GetAddress() &&
		a.GetEndpointMode() == b.GetEndpointMode() &&
		slices.EqualFunc(a.GetPorts(), b.GetPorts(), func(x, y *shoalv1.PortConfig) bool { return x == y || proto.Equal(x, y) }) &&
		len(a.ProtoReflect().GetUnknown()) == 0 && len(b.ProtoReflect().GetUnknown()) == 0
}
