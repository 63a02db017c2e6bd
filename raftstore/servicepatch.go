package raftstore

import (
	"bytes"
	"fmt"
	"slices"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// A service write that changes only labels or the replica count
// (PatchService) leaves the task template and every other part of the
// spec as stored, so an entry carrying the whole new spec would ship,
// copy and decode on every replica what every replica already holds.
// WriteTx.PatchService writes it instead as an UPDATE whose object carries
// neither spec nor previous_spec, marked STORED_SPEC_PATCHED, with the
// patch in the op: every replica applies it as spec = PatchSpec(stored
// spec, patch) and previous_spec = the stored spec, the stored object
// being the very version the writer read (expected_version is required).
// It is written only while every manager reads StoreFormat 5
// (storeformat.go); before that the same change goes out as the ordinary
// update carrying the whole spec, which every release applies alike.

// PatchSpec is spec with patch applied: a shallow copy sharing every field
// of spec but labels, which is a new map (spec's, labels_rm removed,
// labels_add set), and replicas when the patch names it. spec is not
// changed (stored specs are immutable). Deterministic: every replica
// builds the same spec from the same stored one.
func PatchSpec(spec *shoalv1.ServiceSpec, patch *shoalv1.ServicePatch) *shoalv1.ServiceSpec {
	out := copySpec(spec)
	if len(patch.GetLabelsAdd()) > 0 || len(patch.GetLabelsRm()) > 0 {
		labels := make(map[string]string, len(spec.GetLabels())+len(patch.GetLabelsAdd()))
		for k, v := range spec.GetLabels() {
			labels[k] = v
		}
		for _, k := range patch.GetLabelsRm() {
			delete(labels, k)
		}
		for k, v := range patch.GetLabelsAdd() {
			labels[k] = v
		}
		out.Labels = labels
	}
	if patch.Replicas != nil {
		out.Replicas = patch.GetReplicas()
	}
	return out
}

// copySpec is a shallow copy of s (TestCopySpecCopiesEveryField fails when
// a field is added to ServiceSpec and not here), its unknown fields
// included: a newer manager's field in a stored spec is kept by every
// replica's PatchSpec, as a newer replica that knows it keeps it
// (TestPatchKeepsUnknownFieldsOfTheStoredSpec).
func copySpec(s *shoalv1.ServiceSpec) *shoalv1.ServiceSpec {
	if s == nil {
		return &shoalv1.ServiceSpec{}
	}
	out := &shoalv1.ServiceSpec{
		Name:          s.Name,
		Labels:        s.Labels,
		Mode:          s.Mode,
		Replicas:      s.Replicas,
		Task:          s.Task,
		Update:        s.Update,
		Rollback:      s.Rollback,
		Endpoint:      s.Endpoint,
		Job:           s.Job,
		AutoRebalance: s.AutoRebalance,
	}
	if u := s.ProtoReflect().GetUnknown(); len(u) > 0 {
		out.ProtoReflect().SetUnknown(u) // shared: stored specs are immutable
	}
	return out
}

// PatchService replaces service svc.meta.id, read at svc.meta.version (not
// 0), with svc, whose previous_spec must be the spec stored at that
// version (the very pointer read) and whose spec the tx sets to
// PatchSpec(that spec, patch) — or keeps, when the caller built it so
// already (to check it; isPatchOf). The tx's reads see svc; the entry carries
// the patch instead of the specs when the service has no other pending
// change in the tx and every manager reads the compact op. svc and patch
// are owned by the tx from here on.
func (tx *writeTx) PatchService(svc *shoalv1.Service, patch *shoalv1.ServicePatch) error {
	id, version := svc.GetMeta().GetId(), svc.GetMeta().GetVersion()
	if version == 0 {
		return fmt.Errorf("raftstore: service %q: a patch needs the version read", id)
	}
	if patch == nil {
		return fmt.Errorf("raftstore: service %q: no patch", id)
	}
	cur, _ := tx.Get(KindService, id).(*shoalv1.Service)
	if cur == nil {
		return errNotFound(KindService, id)
	}
	if err := checkCurrent(KindService, id, version, cur); err != nil {
		return err
	}
	if svc == cur {
		return fmt.Errorf("raftstore: service %q: the stored object itself was passed to PatchService; build a new one", id)
	}
	if svc.PreviousSpec != cur.Spec {
		return fmt.Errorf("raftstore: service %q: a patch's previous_spec must be the stored spec", id)
	}
	if !isPatchOf(svc.Spec, cur.Spec, patch) {
		svc.Spec = PatchSpec(cur.Spec, patch)
	}
	k := objKey{KindService, id}
	if p, ok := tx.lookup(k); ok {
		// Written before in this tx: the entry carries the whole object
		// (its previous_spec is the pending spec, not a stored one).
		p.obj, p.form, p.patch = svc, formWhole, nil
		return nil
	}
	tx.add(k, pendingOp{op: shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE, obj: svc, expected: version, form: formPatch, patch: patch})
	return nil
}

// patchOp is the compact op of a patch: the service without its specs
// (and its meta cut to the id) and the patch.
func patchOp(svc *shoalv1.Service, expected uint64, patch *shoalv1.ServicePatch) *shoalv1.StoreOp {
	c := serviceWithoutPreviousSpec(svc)
	c.Spec = nil
	c.Meta = entryMeta(svc.GetMeta())
	return &shoalv1.StoreOp{
		Kind: shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE, Object: Wrap(c), ExpectedVersion: expected,
		PreviousSpecSource: shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_STORED_SPEC_PATCHED, Patch: patch,
	}
}

// resolvePatch completes a STORED_SPEC_PATCHED op's service at apply time
// from cur, the stored object the op replaces (whose version the caller
// checked against expected_version): previous_spec is cur's spec (shared)
// and spec that spec patched. The op must name the version, carry a patch
// and neither spec: a replica never guesses which spec the writer read.
func resolvePatch(index uint64, i int, op *shoalv1.StoreOp, o, cur Object, specs []patchedSpec) error {
	svc, ok := o.(*shoalv1.Service)
	stored, ok2 := cur.(*shoalv1.Service)
	switch {
	case !ok || !ok2 || op.GetKind() != shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE:
		return fmt.Errorf("raft entry %d: op %d: a patched previous spec, but the op is not an update of a stored service", index, i)
	case op.GetExpectedVersion() == 0:
		return fmt.Errorf("raft entry %d: op %d: service %q: a patch without the version it applies to", index, i, svc.GetMeta().GetId())
	case op.GetPatch() == nil:
		return fmt.Errorf("raft entry %d: op %d: service %q: a patched previous spec without a patch", index, i, svc.GetMeta().GetId())
	case svc.Spec != nil || svc.PreviousSpec != nil:
		return fmt.Errorf("raft entry %d: op %d: service %q: a patch carrying a spec", index, i, svc.GetMeta().GetId())
	}
	svc.PreviousSpec = stored.GetSpec()
	for _, ps := range specs {
		if ps.op == i && ps.base == stored.GetSpec() {
			// The leader's tx patched this very spec with this patch.
			svc.Spec = ps.spec
			return nil
		}
	}
	svc.Spec = PatchSpec(stored.GetSpec(), op.GetPatch())
	return nil
}

// patchedSpec is the spec a leader's tx built for the patch op at index
// op of its entry: PatchSpec(base, the op's patch), base being the stored
// spec the tx read. Applying that op over base, the leader stores spec
// itself — what PatchSpec would build again, equal on every replica
// (TestLeaderStoresTheTxPatchedSpec) — and an entry applied over another
// spec (or decoded: a follower, a released proposal) is patched as ever.
// The spec is the tx's (PatchService's svc is the tx's from the call on).
type patchedSpec struct {
	op   int
	base *shoalv1.ServiceSpec
	spec *shoalv1.ServiceSpec
}

// isPatchOf says whether spec is what PatchSpec(base, patch) builds: every
// field but labels and replicas the very one of base (pointers included,
// unknown fields alike), replicas the patch's or base's, labels base's
// with the patch applied. It allocates nothing, so PatchService keeps a
// spec its caller patched to check it instead of patching it again.
// TestIsPatchOfChecksEveryField fails when a field is added to
// ServiceSpec and not here.
func isPatchOf(spec, base *shoalv1.ServiceSpec, patch *shoalv1.ServicePatch) bool {
	if spec == nil || spec == base {
		return false
	}
	b := base
	if b == nil {
		b = &shoalv1.ServiceSpec{}
	}
	replicas := b.Replicas
	if patch.Replicas != nil {
		replicas = patch.GetReplicas()
	}
	if spec.Name != b.Name || spec.Mode != b.Mode || spec.Replicas != replicas || spec.Task != b.Task ||
		spec.Update != b.Update || spec.Rollback != b.Rollback || spec.Endpoint != b.Endpoint ||
		spec.Job != b.Job || spec.AutoRebalance != b.AutoRebalance ||
		!bytes.Equal(spec.ProtoReflect().GetUnknown(), b.ProtoReflect().GetUnknown()) {
		return false
	}
	n := 0 // the labels the patched spec has
	for k, v := range patch.GetLabelsAdd() {
		if got, ok := spec.Labels[k]; !ok || got != v {
			return false
		}
		n++
	}
	for k, v := range b.Labels {
		if _, ok := patch.GetLabelsAdd()[k]; ok || slices.Contains(patch.GetLabelsRm(), k) {
			continue
		}
		if got, ok := spec.Labels[k]; !ok || got != v {
			return false
		}
		n++
	}
	return len(spec.Labels) == n
}
