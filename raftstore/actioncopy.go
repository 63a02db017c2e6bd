package raftstore

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// copyAction is the leader's copy of its own proposal for the FSM: equal
// to decoding the entry (TestCopyActionEqualsDecoding), deep where apply
// keeps or changes something, shared where apply only reads. Apply stores
// the op's object (its meta stamped, its specs resolved) and the action's
// time (created_at, updated_at), so both are copied; it only reads an op's
// kind, versions, source and patch (PatchSpec builds new labels), so the
// patch is shared. proto.Clone of the whole action spent most of its time
// in the patch's map (reflect.mapassign). An action or op carrying unknown
// fields (none that Update builds) is cloned whole.
// TestCopyActionCopiesEveryField fails when StoreAction or StoreOp gains
// a field this does not handle.
func copyAction(act *shoalv1.StoreAction) *shoalv1.StoreAction {
	if len(act.ProtoReflect().GetUnknown()) > 0 {
		return proto.Clone(act).(*shoalv1.StoreAction)
	}
	out := &shoalv1.StoreAction{Time: copyTime(act.GetTime())}
	if len(act.Ops) == 0 {
		return out
	}
	out.Ops = make([]*shoalv1.StoreOp, len(act.Ops))
	ops := make([]shoalv1.StoreOp, len(act.Ops)) // one allocation for the ops
	for i, op := range act.Ops {
		if op == nil {
			// Decoding yields an empty op for a nil element.
			out.Ops[i] = &ops[i]
			continue
		}
		if len(op.ProtoReflect().GetUnknown()) > 0 {
			out.Ops[i] = proto.Clone(op).(*shoalv1.StoreOp)
			continue
		}
		o := &ops[i]
		o.Kind, o.ExpectedVersion, o.PreviousSpecSource = op.Kind, op.ExpectedVersion, op.PreviousSpecSource
		if op.Object != nil {
			o.Object = copyObject(op.Object)
		}
		o.Patch = op.Patch // read only (resolvePatch)
		out.Ops[i] = o
	}
	return out
}

// copyTime is a copy of t (nil for nil), cloned whole if it carries
// unknown fields.
func copyTime(t *timestamppb.Timestamp) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	if len(t.ProtoReflect().GetUnknown()) > 0 {
		return proto.Clone(t).(*timestamppb.Timestamp)
	}
	return &timestamppb.Timestamp{Seconds: t.Seconds, Nanos: t.Nanos}
}

// copyObject is a deep copy of an op's object: by hand for a service
// carrying neither spec (the patch op's: its meta, version fields and
// statuses; TestCopyBareServiceCopiesEveryField), by proto.Clone for the
// rest and for anything carrying unknown fields.
func copyObject(w *shoalv1.StoreObject) *shoalv1.StoreObject {
	svc := w.GetService()
	if svc == nil || svc.Spec != nil || svc.PreviousSpec != nil ||
		len(w.ProtoReflect().GetUnknown()) > 0 || len(svc.ProtoReflect().GetUnknown()) > 0 {
		return proto.Clone(w).(*shoalv1.StoreObject)
	}
	out := &shoalv1.Service{SpecVersion: svc.SpecVersion, RebalanceRequested: svc.RebalanceRequested}
	if m := svc.Meta; m != nil {
		if m.CreatedAt == nil && m.UpdatedAt == nil && len(m.ProtoReflect().GetUnknown()) == 0 {
			out.Meta = &shoalv1.Meta{Id: m.Id, Version: m.Version} // entryMeta's
		} else {
			out.Meta = proto.Clone(m).(*shoalv1.Meta)
		}
	}
	if svc.Vips != nil {
		out.Vips = make([]*shoalv1.ServiceVIP, len(svc.Vips))
		for i, v := range svc.Vips {
			out.Vips[i] = proto.Clone(v).(*shoalv1.ServiceVIP)
		}
	}
	if svc.UpdateStatus != nil {
		out.UpdateStatus = proto.Clone(svc.UpdateStatus).(*shoalv1.UpdateStatus)
	}
	if svc.JobStatus != nil {
		out.JobStatus = proto.Clone(svc.JobStatus).(*shoalv1.JobStatus)
	}
	return Wrap(out)
}
