package controlapi

import (
	"context"
	"fmt"
	"strings"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/specrules"
)

// PatchService is UpdateService of spec' = the stored spec with the patch
// applied (labels added and removed, the replica count), decided and
// stored as that UpdateService would (previous_spec, spec_version,
// update_status, job_status, the checked-task memo, the events), without
// the caller sending the spec: the leader reads it, so a patch is atomic
// where a read-modify-write conflicts with any concurrent update, and the
// raft entry carries the patch instead of the spec while every manager
// reads that form (raftstore.WriteTx.PatchService).
//
// Only what the patch touches is checked (the labels' rules, replicas ≥ 0,
// the mode, max_replicas), with the rules of a full validation; the rest
// of spec' is the stored spec, which a write of this process checked
// (checkedTasks) or else is checked in full as UpdateService checks it.
// The task, networks, ports and placement do not change, so host access,
// network names, spread labels and port conflicts have nothing new to
// check.
func (s *Server) PatchService(ctx context.Context, req *shoalv1.PatchServiceRequest) (*shoalv1.PatchServiceResponse, error) {
	if err := checkView(req.GetView()); err != nil {
		return nil, err
	}
	patch, err := patchOf(req)
	if err != nil {
		return nil, err
	}
	var out, cur *shoalv1.Service
	idx, err := s.updateIgnoringVersion(ctx, req.GetVersion() == 0, func(tx raftstore.WriteTx) error {
		var err error
		if cur, err = raftstore.ResolveRef[*shoalv1.Service](tx, req.GetServiceId()); err != nil {
			return err
		}
		id := cur.GetMeta().GetId()
		spec := raftstore.PatchSpec(cur.GetSpec(), patch)
		var fe fieldErrors
		if len(spec.GetLabels()) > specrules.MaxLabels {
			fe.add("labels_add", "the service would have %d labels, at most %d", len(spec.GetLabels()), specrules.MaxLabels)
		}
		if patch.Replicas != nil {
			if m := cur.GetSpec().GetMode(); m != shoalv1.ServiceMode_SERVICE_MODE_REPLICATED {
				// Named: `service scale a=1 b=2` says which one it refused.
				fe.add("replicas", "only for replicated services, not %s (service %q)", strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(m.String(), "SERVICE_MODE_")), "_", "-"), cur.GetSpec().GetName())
			} else if limit := s.maxReplicas(tx); spec.GetReplicas() > limit {
				fe.add("replicas", "%d is above the cluster setting max-replicas = %d", spec.GetReplicas(), limit)
			}
		}
		if err := fe.err(); err != nil {
			return err
		}
		// A stored task this process did not check is checked in full, as
		// UpdateService would check the same spec.
		if !s.checked.has(id, cur.GetMeta().GetVersion()) {
			if err := validateServiceUpdate(spec, false); err != nil {
				return err
			}
		}
		// The task is the stored one: UpdateService's sameTask, so no
		// new spec_version and no rollout (the update and rollback
		// configs are the stored ones too).
		svc := nextService(cur, spec)
		keepRolloutStart(cur, svc)
		if v := req.GetVersion(); v != 0 {
			svc.Meta.Version = v
		}
		out = svc
		if svc.PreviousSpec != cur.GetSpec() {
			// A rollout under way keeps its start as previous_spec: not
			// the stored spec, so the entry carries the whole service.
			return tx.Update(svc)
		}
		return tx.PatchService(svc, patch)
	})
	if err != nil {
		return nil, err
	}
	// The stored task at idx is the one at the version read: what the
	// memo said of that version it says of idx (UpdateService remembers
	// the task it stored, checked or accepted, with its encoding).
	if id := out.GetMeta().GetId(); !s.checked.carry(id, cur.GetMeta().GetVersion(), idx) {
		sent := newSentTask()
		sent.encode(out.GetSpec().GetTask())
		s.checked.addEncoded(id, idx, sent.enc)
		sent.release()
	}
	// The entry is applied: the store holds copies of out and of its
	// meta, so out and its meta are this call's to set; out's other
	// messages (its spec, on the leader; previous_spec, VIPs, statuses)
	// may be the stored ones and are only read.
	out.Meta.Version = idx
	s.log.Debug("service patched", "service_id", out.GetMeta().GetId(), "spec_version", out.GetSpecVersion())
	return &shoalv1.PatchServiceResponse{Service: replyService(out, req.GetView())}, nil
}

// patchOf checks a request's patch on its own (what needs no stored
// service) and returns it as the store's ServicePatch. The request is
// this call's own: the patch shares its map and slice.
func patchOf(req *shoalv1.PatchServiceRequest) (*shoalv1.ServicePatch, error) {
	if req.GetServiceId() == "" {
		return nil, errdefs.InvalidArgumentf("service_id: required")
	}
	add, rm := req.GetLabelsAdd(), req.GetLabelsRm()
	if len(add) == 0 && len(rm) == 0 && req.Replicas == nil {
		return nil, errdefs.InvalidArgumentf("labels_add, labels_rm, replicas: the patch changes nothing (set at least one)")
	}
	p := specrules.Labels("labels_add", add)
	p = append(p, specrules.LabelKeys("labels_rm", rm)...)
	for i, k := range rm {
		if _, ok := add[k]; ok {
			p.Add(fmt.Sprintf("labels_rm[%d]", i), "%q is in labels_add too: add or remove it, not both", k)
		}
	}
	if r := req.GetReplicas(); req.Replicas != nil && r < 0 {
		p.Add("replicas", "must be >= 0, got %d", r)
	}
	if err := invalidProblems(p); err != nil {
		return nil, err
	}
	out := &shoalv1.ServicePatch{LabelsRm: rm, Replicas: req.Replicas}
	if len(add) > 0 {
		out.LabelsAdd = add
	}
	return out, nil
}
