package raftstore

import (
	"fmt"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// A service spec update keeps the spec it replaces as previous_spec, so an
// entry carrying both would ship, copy, store and decode the old spec a
// second time although every replica applying the entry already holds it.
// Such an op is written without previous_spec and marked STORED_SPEC; the
// replica takes the stored object's spec when it applies the op. The
// version check makes that the very spec the writer read.

// elidePreviousSpec returns the op object and source for one update: when
// the object's previous_spec is the stored spec of the version it replaces
// (the same pointer: what a writer building on the stored object shares),
// a shallow copy without previous_spec, its meta cut to the id
// (entryMeta), and STORED_SPEC; otherwise o as is.
// stored is the object as the writer's view had it (nil if none). o is the
// writer's and is not changed.
func elidePreviousSpec(o Object, expected uint64, stored Object) (Object, shoalv1.PreviousSpecSource) {
	svc, ok := o.(*shoalv1.Service)
	if !ok || expected == 0 || svc.PreviousSpec == nil {
		return o, shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_IN_OBJECT
	}
	cur, ok := stored.(*shoalv1.Service)
	if !ok || cur.GetMeta().GetVersion() != expected || cur.Spec != svc.PreviousSpec {
		return o, shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_IN_OBJECT
	}
	c := serviceWithoutPreviousSpec(svc)
	c.Meta = entryMeta(svc.GetMeta())
	return c, shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_STORED_SPEC
}

// entryMeta is the meta an op's object needs in the entry: its id. Every
// replica's apply, of every release since the first, stamps version,
// created_at and updated_at from the entry's index, the stored object and
// the entry's time (applyAction), so the writer's values were shipped,
// encoded, copied and decoded on every replica only to be overwritten
// (TestEntryMetaIsOnlyWhatApplyDoesNotStamp keeps the list true). Used
// for the compact service update, which only a release that reads it
// receives (the old-manager gate), so its bytes may change.
func entryMeta(m *shoalv1.Meta) *shoalv1.Meta {
	return &shoalv1.Meta{Id: m.GetId()}
}

// serviceWithoutPreviousSpec is a shallow copy of s, sharing every field
// but previous_spec (TestServiceWithoutPreviousSpecCopiesEveryField fails
// when a field is added to Service and not here).
func serviceWithoutPreviousSpec(s *shoalv1.Service) *shoalv1.Service {
	return &shoalv1.Service{
		Meta:               s.Meta,
		Spec:               s.Spec,
		SpecVersion:        s.SpecVersion,
		Vips:               s.Vips,
		UpdateStatus:       s.UpdateStatus,
		JobStatus:          s.JobStatus,
		RebalanceRequested: s.RebalanceRequested,
	}
}

// resolvePreviousSpec completes an op's object at apply time: for
// STORED_SPEC, previous_spec becomes the spec of cur, the stored object the
// op replaces (shared: stored objects are immutable); for
// STORED_SPEC_PATCHED, spec too (resolvePatch). It reads only the
// entry and the state, so every replica resolves the same.
func resolvePreviousSpec(index uint64, i int, op *shoalv1.StoreOp, o, cur Object, specs []patchedSpec) error {
	src := op.GetPreviousSpecSource()
	if op.GetPatch() != nil && src != shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_STORED_SPEC_PATCHED {
		return fmt.Errorf("raft entry %d: op %d: a patch with previous spec source %v", index, i, src)
	}
	switch src {
	case shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_IN_OBJECT:
		return nil
	case shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_STORED_SPEC_PATCHED:
		return resolvePatch(index, i, op, o, cur, specs) // servicepatch.go
	case shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_STORED_SPEC:
	default:
		return fmt.Errorf("raft entry %d: op %d: unknown previous spec source %v", index, i, op.GetPreviousSpecSource())
	}
	svc, ok := o.(*shoalv1.Service)
	stored, ok2 := cur.(*shoalv1.Service)
	if !ok || !ok2 || op.GetKind() != shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE {
		return fmt.Errorf("raft entry %d: op %d: previous spec from the stored object, but the op is not an update of a stored service", index, i)
	}
	svc.PreviousSpec = stored.GetSpec()
	return nil
}
