package raftstore

import (
	"fmt"
	"math/rand"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// unknownField is an encoded field number 999, which no message has.
func unknownField(v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, 999, protowire.VarintType), v)
}

// randomOp is one op of every form Update writes, with random content.
func randomOp(r *rand.Rand, i int) *shoalv1.StoreOp {
	id := fmt.Sprintf("o%d-%d", i, r.Intn(1000))
	label := func() map[string]string {
		m := map[string]string{}
		for range r.Intn(4) {
			m[fmt.Sprintf("k%d", r.Intn(10))] = fmt.Sprintf("v%d", r.Intn(1000))
		}
		return m
	}
	st := &shoalv1.TaskStatus{State: shoalv1.TaskState(r.Intn(8)), Timestamp: timestamppb.New(t0), Message: id}
	switch r.Intn(10) {
	case 0:
		return opCreate(benchService(id, 0))
	case 1:
		return opUpdate(benchService(id, uint64(r.Intn(9)+1)), uint64(r.Intn(9)+1))
	case 2:
		svc := benchService(id, 4)
		o, src := elidePreviousSpec(svc, 4, &shoalv1.Service{Meta: &shoalv1.Meta{Id: id, Version: 4}, Spec: svc.PreviousSpec})
		op := opUpdate(o, 4)
		op.PreviousSpecSource = src
		return op
	case 3:
		p := &shoalv1.ServicePatch{LabelsAdd: label(), LabelsRm: []string{"bench", fmt.Sprint(r.Intn(5))}}
		if r.Intn(2) == 0 {
			p.Replicas = int64p(int64(r.Intn(5)))
		}
		svc := benchService(id, 6)
		svc.Vips = []*shoalv1.ServiceVIP{{NetworkId: "n1", Address: "10.0.0.2/24"}}
		return patchOp(svc, 6, p)
	case 4:
		return opDelete(Kind([]Kind{KindService, KindTask, KindNode, KindNetwork}[r.Intn(4)]), id, uint64(r.Intn(3)))
	case 5:
		t := benchTask(r.Intn(1000), "s1")
		t.NodeId, t.Networks = "", nil
		return createOp(t)
	case 6:
		return statusOp(id, uint64(r.Intn(9)+1), st)
	case 7:
		return assignOp(id, uint64(r.Intn(9)+1), "node1", st)
	case 8:
		n := mkNode(id, "n", "host")
		n.Spec.Labels = label()
		return opCreate(n)
	default:
		net := mkNetwork(id, "net")
		net.Spec.Labels = label()
		return opUpdate(net, 2)
	}
}

// The leader's copy of its proposal is the action a follower decodes from
// the same bytes, for random actions of every op form, with and without
// unknown fields (kept either way); and nothing apply keeps or changes is
// shared with the proposal.
func TestCopyActionEqualsDecoding(t *testing.T) {
	r := rand.New(rand.NewSource(11))
	for n := range 500 {
		act := &shoalv1.StoreAction{Time: timestamppb.New(t0.Add(time.Duration(n) * time.Millisecond))}
		for i := range r.Intn(5) {
			act.Ops = append(act.Ops, randomOp(r, i))
		}
		if n%7 == 0 {
			act.ProtoReflect().SetUnknown(unknownField(uint64(n)))
		}
		if n%5 == 0 && len(act.Ops) > 0 {
			act.Ops[0].ProtoReflect().SetUnknown(unknownField(1))
		}
		if n%3 == 0 && len(act.Ops) > 0 {
			act.Ops[len(act.Ops)-1].GetObject().ProtoReflect().SetUnknown(unknownField(2))
		}
		if n%11 == 0 {
			act.Time.ProtoReflect().SetUnknown(unknownField(3))
		}
		if n%13 == 0 {
			act.Time = nil
		}
		data, err := proto.Marshal(act)
		if err != nil {
			t.Fatal(err)
		}
		want := new(shoalv1.StoreAction)
		if err := proto.Unmarshal(data, want); err != nil {
			t.Fatal(err)
		}
		before := proto.Clone(act)
		got := copyAction(act)
		if !proto.Equal(got, want) {
			t.Fatalf("case %d: the copy\n%v\ndiffers from the decoded entry\n%v", n, got, want)
		}
		if g, w := string(got.ProtoReflect().GetUnknown()), string(want.ProtoReflect().GetUnknown()); g != w {
			t.Fatalf("case %d: unknown fields %q, decoded %q", n, g, w)
		}
		// What apply keeps (the objects, the time) is the copy's own:
		// stamping and resolving it leaves the proposal as it was.
		if act.Time != nil && got.Time == act.Time {
			t.Fatalf("case %d: the time is shared", n)
		}
		for i, op := range got.GetOps() {
			if op == act.Ops[i] || (op.Object != nil && op.Object == act.Ops[i].Object) {
				t.Fatalf("case %d: op %d or its object is shared", n, i)
			}
			o := Unwrap(op.GetObject())
			if o == nil {
				continue
			}
			if o == Unwrap(act.Ops[i].GetObject()) {
				t.Fatalf("case %d: op %d's object is shared", n, i)
			}
			m := ensureMeta(o)
			m.Version, m.CreatedAt, m.UpdatedAt = 99, got.GetTime(), got.GetTime()
			if svc, ok := o.(*shoalv1.Service); ok {
				if svc.Spec != nil {
					svc.Spec.Labels["changed"] = "x"
				}
				svc.PreviousSpec = PatchSpec(svc.PreviousSpec, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"changed": "y"}})
				for _, v := range svc.Vips {
					v.Address = "changed"
				}
			}
			if tk, ok := o.(*shoalv1.Task); ok && tk.Status != nil {
				tk.Status.Message = "changed"
			}
		}
		if got.Time != nil {
			got.Time.Seconds++
		}
		if !proto.Equal(act, before) {
			t.Fatalf("case %d: changing the copy changed the proposal", n)
		}
	}
}

// Every field of StoreAction and StoreOp is set here and copied: a field
// added to either fails until copyAction handles it.
func TestCopyActionCopiesEveryField(t *testing.T) {
	op := patchOp(benchService("s1", 3), 3, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"a": "b"}, LabelsRm: []string{"c"}, Replicas: int64p(2)})
	act := &shoalv1.StoreAction{Ops: []*shoalv1.StoreOp{op}, Time: timestamppb.New(t0)}
	for _, m := range []proto.Message{act, op} {
		n := 0
		m.ProtoReflect().Range(func(protoreflect.FieldDescriptor, protoreflect.Value) bool { n++; return true })
		if all := m.ProtoReflect().Descriptor().Fields().Len(); n != all {
			t.Fatalf("the test sets %d of %s's %d fields; set the new one", n, m.ProtoReflect().Descriptor().Name(), all)
		}
	}
	if got := copyAction(act); !proto.Equal(got, act) {
		t.Fatalf("copy %v, want %v", got, act)
	}
}

// BenchmarkCopyAction: the leader's copy of a patch entry, by copyAction
// and by proto.Clone (its form before).
func BenchmarkCopyAction(b *testing.B) {
	op := patchOp(benchService("s1", 3), 3, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"bench": "0123456789"}})
	act := &shoalv1.StoreAction{Ops: []*shoalv1.StoreOp{op}, Time: timestamppb.New(t0)}
	b.Run("copyAction", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			copyAction(act)
		}
	})
	b.Run("clone", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			proto.Clone(act)
		}
	})
}

// Every field of Service but the specs is set here and copied by
// copyObject's hand path, deep: a field added to Service fails until
// copyObject handles it.
func TestCopyBareServiceCopiesEveryField(t *testing.T) {
	svc := &shoalv1.Service{
		Meta: &shoalv1.Meta{Id: "s1", Version: 3, CreatedAt: timestamppb.New(t0)}, SpecVersion: 2,
		Vips:         []*shoalv1.ServiceVIP{{NetworkId: "n1", Address: "10.0.0.2/24"}},
		UpdateStatus: &shoalv1.UpdateStatus{State: shoalv1.UpdateState_UPDATE_STATE_COMPLETED, StartedAt: timestamppb.New(t0)},
		JobStatus:    &shoalv1.JobStatus{Iteration: 4}, RebalanceRequested: true,
	}
	n := 0
	svc.ProtoReflect().Range(func(protoreflect.FieldDescriptor, protoreflect.Value) bool { n++; return true })
	if all := svc.ProtoReflect().Descriptor().Fields().Len(); n != all-2 { // all but spec and previous_spec
		t.Fatalf("the test sets %d of Service's %d fields; set the new one", n, all)
	}
	for _, m := range []*shoalv1.Meta{svc.Meta, {Id: "s1"}} {
		svc.Meta = m
		before := proto.Clone(svc)
		w := Wrap(svc)
		got := copyObject(w)
		if !proto.Equal(got, w) {
			t.Fatalf("copy %v, want %v", got, w)
		}
		c := got.GetService()
		if c == svc || c.Meta == svc.Meta || &c.Vips[0] == &svc.Vips[0] || c.Vips[0] == svc.Vips[0] || c.UpdateStatus == svc.UpdateStatus || c.JobStatus == svc.JobStatus {
			t.Fatal("the copy shares a message with the original")
		}
		c.Meta.Version, c.Vips[0].Address, c.UpdateStatus.State, c.JobStatus.Iteration = 9, "x", 0, 0
		if !proto.Equal(svc, before) {
			t.Fatal("changing the copy changed the original")
		}
	}
}
