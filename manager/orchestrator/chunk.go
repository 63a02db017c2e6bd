package orchestrator

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Bounds of the raft entry one pass writes. A pass with more to write
// stops at a boundary that leaves a consistent state (all of a slot's or
// node's changes, or whole task updates) and asks for another pass at
// once. Every pass recomputes from the store, so the next pass, or a new
// leader's first, carries on where the store is: no entry ever holds a
// whole 100,000-replica service, and none is repeated. 8,000 objects /
// 4 MiB, half of raftstore's entry limit in bytes: each pass reads the
// whole of what it reconciles (every task of a service it creates tasks
// for, every pending task, every task on a node), so a burst of 100,000
// tasks costs passes × tasks; with 1,000 objects per entry that read
// dominated (BenchmarkBurstToAssigned at 1,000 × 100,000: 1,241 tasks/s
// with 1,000 per entry, 2,076/s with 4,000, on the same loaded machine),
// and with tasks placed at creation (one compact op each, ~100 bytes)
// 8,000 took a 100,000-task service to ASSIGNED in 3.2–3.4 s against
// 4.1–4.4 s with 4,000 (`bench schedule --nodes 1000 --tasks 100000`,
// 2026-12-07, load 1–2), while one entry's apply stays well under the
// heartbeat limit.
const (
	defaultMaxEntryOps   = 8000
	defaultMaxEntryBytes = 4 << 20
	// deleteBytes is what a delete costs in an entry: kind and id.
	deleteBytes = 64
)

// budget counts what a pass has put in its entry. A nil budget is
// unlimited (the exported rule functions).
type budget struct {
	maxOps, maxBytes int
	ops, bytes       int
	// hist is the pass's history rule (history.go): like the budget, it
	// is per pass, so it travels with it.
	hist *histRule
	// sizer sizes the tasks charged.
	sizer *taskSizer
}

// histRule is the pass's history rule; nil (defaults) without one.
func (b *budget) histRule() *histRule {
	if b == nil {
		return nil
	}
	return b.hist
}

func newBudget(maxOps, maxBytes int) *budget {
	return &budget{maxOps: maxOps, maxBytes: maxBytes}
}

// spent reports whether the entry is full: nothing more may be added.
func (b *budget) spent() bool {
	return b != nil && (b.ops >= b.maxOps || b.bytes >= b.maxBytes)
}

// charge counts tasks created or updated.
func (b *budget) charge(ts ...*shoalv1.Task) {
	if b == nil {
		return
	}
	if b.sizer == nil {
		b.sizer = &taskSizer{}
	}
	for _, t := range ts {
		b.ops++
		b.bytes += b.sizer.size(t)
	}
}

// taskSizer is proto.Size of tasks with the spec sized once: a pass
// charges thousands of tasks sharing their service's TaskSpec (newTask),
// and sizing that spec again for each was most of the budget's cost (the
// scheduler's takeWithin and the reconciler's plans; 1.5 % of the
// leader's CPU at 1,000 nodes × 100,000 tasks). The size is exact
// (TestTaskSizerIsProtoSize).
type taskSizer struct {
	spec     *shoalv1.TaskSpec
	specSize int
	// rest is a task without its spec, sized in place of t (reused:
	// one goroutine owns a pass and its budget).
	rest *shoalv1.Task
}

// specFieldTag is the size of Task.spec's tag.
var specFieldTag = protowire.SizeTag(protowire.Number((&shoalv1.Task{}).ProtoReflect().Descriptor().Fields().ByName("spec").Number()))

func (z *taskSizer) size(t *shoalv1.Task) int {
	if t.Spec == nil {
		return proto.Size(t)
	}
	if t.Spec != z.spec {
		z.spec, z.specSize = t.Spec, proto.Size(t.Spec)
	}
	if z.rest == nil {
		z.rest = &shoalv1.Task{}
	}
	r := z.rest
	r.Meta, r.ServiceId, r.ServiceName, r.Slot, r.NodeId = t.Meta, t.ServiceId, t.ServiceName, t.Slot, t.NodeId
	r.DesiredState, r.Status, r.SpecVersion, r.Networks, r.JobIteration = t.DesiredState, t.Status, t.SpecVersion, t.Networks, t.JobIteration
	n := proto.Size(r) + specFieldTag + protowire.SizeBytes(z.specSize) + len(t.ProtoReflect().GetUnknown())
	// Hold no task's parts.
	r.Meta, r.ServiceId, r.ServiceName, r.NodeId, r.Status, r.Networks = nil, "", "", "", nil, nil
	return n
}

// chargePlan counts a plan's changes.
func (b *budget) chargePlan(p Plan) {
	if b == nil {
		return
	}
	b.charge(p.Create...)
	b.charge(p.Update...)
	b.ops += len(p.Delete)
	b.bytes += deleteBytes * len(p.Delete)
}

// takeWithin returns the longest prefix of ts that the budget admits,
// charging it, and whether ts was cut.
func (b *budget) takeWithin(ts []*shoalv1.Task) ([]*shoalv1.Task, bool) {
	for i, t := range ts {
		if b.spent() {
			return ts[:i], true
		}
		b.charge(t)
	}
	return ts, false
}
