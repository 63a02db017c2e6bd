package raftstore

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Two entries as the release before TASK_STATUS encoded them (printed by
// that release's code): a create of service s1 and its task t1, then the
// task's RUNNING status written as a whole-task UPDATE.
const (
	oldTaskCreateEntry = "0a36080112321a300a040a02733112260a0377656220012a1d0a1b0a0b64656d6f3a6c617465737412052f64656d6f1205736572766520010a710801126d226b0a040a027431120273311a0377656220012a026e3130063a020802421d0a1b0a0b64656d6f3a6c617465737412052f64656d6f120573657276654801522d0a046e657431120d31302e3232302e332e372f32341a1130323a34323a30613a64633a30333a30372203776562120608a09d90d806"
	oldTaskStatusEntry = "0a8a0108021283012280010a060a0274311001120273311a0377656220012a026e3130063a150806120608a09d90d8061a0773746172746564302a421d0a1b0a0b64656d6f3a6c617465737412052f64656d6f120573657276654801522d0a046e657431120d31302e3232302e332e372f32341a1130323a34323a30613a64633a30333a303722037765621801120608a19d90d806"
)

func goldTaskSpec() *shoalv1.TaskSpec {
	return &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:latest", Command: []string{"/demo", "serve"}}}
}

func goldService() *shoalv1.Service {
	return &shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1"}, Spec: &shoalv1.ServiceSpec{Name: "web", Replicas: 1, Task: goldTaskSpec()}, SpecVersion: 1}
}

// goldTask is task t1 of the golden entries: spec, networks and ids set.
func goldTask(version uint64, st *shoalv1.TaskStatus) *shoalv1.Task {
	return &shoalv1.Task{
		Meta: &shoalv1.Meta{Id: "t1", Version: version}, ServiceId: "s1", ServiceName: "web", Slot: 1, NodeId: "n1",
		DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING, Status: st, Spec: goldTaskSpec(), SpecVersion: 1,
		Networks: []*shoalv1.NetworkAttachment{{NetworkId: "net1", Address: "10.220.3.7/24", Mac: "02:42:0a:dc:03:07", Aliases: []string{"web"}}},
	}
}

func goldRunning() *shoalv1.TaskStatus {
	return &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING, Message: "started", Pid: 42, Timestamp: timestamppb.New(t0)}
}

// A log of the previous release replays to the state it always did; the
// same status written as a TASK_STATUS op replays to the identical state
// and watch event; and a whole-task update still encodes as it did.
func TestOldTaskEntriesReplayIdentically(t *testing.T) {
	old := newTestFSM()
	applyBytes(t, old, 1, oldTaskCreateEntry)
	sub, err := old.hub.watch(context.Background(), 0, []Kind{KindTask})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	applyBytes(t, old, 2, oldTaskStatusEntry)
	want := goldTask(2, goldRunning())
	want.Meta.CreatedAt, want.Meta.UpdatedAt = timestamppb.New(t0), timestamppb.New(t0.Add(time.Second))
	if got, _ := Get[*shoalv1.Task](old.view(), "t1"); !proto.Equal(got, want) {
		t.Fatalf("old log replays to\n%v\nwant\n%v", got, want)
	}
	oldEvent := collect(t, sub, 1)[0]

	f := newTestFSM()
	applyBytes(t, f, 1, oldTaskCreateEntry)
	sub2, err := f.hub.watch(context.Background(), 0, []Kind{KindTask})
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Close()
	if err := applyDirect(t, f, 2, t0.Add(time.Second), statusOp("t1", 1, goldRunning())); err != nil {
		t.Fatal(err)
	}
	if dump(f.view()) != dump(old.view()) {
		t.Fatalf("TASK_STATUS applies to\n%s\nthe old form to\n%s", dump(f.view()), dump(old.view()))
	}
	if ev := collect(t, sub2, 1)[0]; !proto.Equal(ev, oldEvent) {
		t.Fatalf("TASK_STATUS event %v, old form's %v", ev, oldEvent)
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(&shoalv1.StoreAction{
		Time: timestamppb.New(t0.Add(time.Second)), Ops: []*shoalv1.StoreOp{opUpdate(goldTask(1, goldRunning()), 1)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(data) != oldTaskStatusEntry {
		t.Fatal("a whole-task update encodes differently from the previous release")
	}
}

// taskWithStatus must carry every other field of Task: this fails when a
// field is added to Task and not to the copy.
func TestTaskWithStatusCopiesEveryField(t *testing.T) {
	src := goldTask(7, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED})
	src.JobIteration = 3
	n := 0
	src.ProtoReflect().Range(func(protoreflect.FieldDescriptor, protoreflect.Value) bool { n++; return true })
	if all := src.ProtoReflect().Descriptor().Fields().Len(); n != all {
		t.Fatalf("the test sets %d of Task's %d fields; set the new one", n, all)
	}
	// A TASK_STATUS op's meta is built at apply time from the id, the
	// index, the entry's time and the stored created_at: a new Meta field
	// would be lost on that path.
	if n := (&shoalv1.Meta{}).ProtoReflect().Descriptor().Fields().Len(); n != 4 {
		t.Fatalf("Meta has %d fields, not 4: carry the new one from the stored task in applyTaskStatus", n)
	}
	meta := &shoalv1.Meta{Id: "t1", Version: 9}
	got := taskWithStatus(src, meta, goldRunning())
	want := proto.Clone(src).(*shoalv1.Task)
	want.Meta, want.Status = meta, goldRunning()
	if !proto.Equal(got, want) {
		t.Fatalf("copy %v, want %v", got, want)
	}
	if got.Spec != src.Spec || &got.Networks[0] != &src.Networks[0] {
		t.Fatal("the copy does not share the unchanged parts")
	}
	if src.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_ASSIGNED || src.GetMeta().GetVersion() != 7 {
		t.Fatal("the source changed")
	}
}

// createGold writes service s1 and task t1 and returns the stored task.
func createGold(t *testing.T, s *Store) *shoalv1.Task {
	t.Helper()
	mustUpdate(t, s, createIfMissing(goldService(), goldTask(0, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED})))
	cur, _ := Get[*shoalv1.Task](s.View(), "t1")
	return cur
}

// UpdateTaskStatus writes an entry of the id, the version and the status;
// the stored task is the previous one with the new status, sharing its
// spec and networks.
func TestUpdateTaskStatusWritesOnlyTheStatus(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, createIfMissing(gateNode("m1", roleManager, roleManager, StoreFormat)))
	prev := createGold(t, s)
	idx := mustUpdate(t, s, func(tx WriteTx) error {
		if err := tx.UpdateTaskStatus("t1", prev.GetMeta().GetVersion(), goldRunning()); err != nil {
			return err
		}
		// The tx reads its own write.
		if got, _ := Get[*shoalv1.Task](tx, "t1"); got.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
			return fmt.Errorf("the tx reads status %v", got.GetStatus())
		}
		return nil
	})
	op := entryOp(t, s, idx)
	if want := statusOp("t1", prev.GetMeta().GetVersion(), goldRunning()); !proto.Equal(op, want) {
		t.Fatalf("entry op %v, want %v", op, want)
	}
	got, _ := Get[*shoalv1.Task](s.View(), "t1")
	want := proto.Clone(prev).(*shoalv1.Task)
	want.Status = goldRunning()
	want.Meta.Version, want.Meta.UpdatedAt = idx, got.GetMeta().GetUpdatedAt()
	if !proto.Equal(got, want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
	if got.Spec != prev.Spec || &got.Networks[0] != &prev.Networks[0] || got.Meta == prev.Meta {
		t.Fatal("the new version does not share the unchanged parts, or shares the meta")
	}
	if prev.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_ASSIGNED || prev.GetMeta().GetVersion() == idx {
		t.Fatal("the previous version changed")
	}
}

// While a manager does not read StoreFormat 3 (it reports 2), a status goes
// out as a whole-task UPDATE; the state is the same either way.
func TestTaskStatusWholeWhileAManagerIsOld(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, createIfMissing(gateNode("m1", roleManager, roleManager, StoreFormat), gateNode("m2", roleManager, roleManager, 2)))
	prev := createGold(t, s)
	idx := mustUpdate(t, s, func(tx WriteTx) error { return tx.UpdateTaskStatus("t1", prev.GetMeta().GetVersion(), goldRunning()) })
	op := entryOp(t, s, idx)
	if op.GetKind() != shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE || !proto.Equal(op.GetObject().GetTask().GetSpec(), prev.GetSpec()) {
		t.Fatalf("with an old manager the entry is %v", op)
	}
	got, _ := Get[*shoalv1.Task](s.View(), "t1")
	if got.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING || got.GetMeta().GetVersion() != idx {
		t.Fatalf("stored %v", got)
	}
}

// Another write of the same task in the tx, before or after the status,
// makes the whole-task op, with every change in it; a stale or missing
// version is refused and nothing is proposed.
func TestUpdateTaskStatusMixesWithOtherWrites(t *testing.T) {
	s := single(t, options{})
	prev := createGold(t, s)
	v := prev.GetMeta().GetVersion()
	withNode := func(node string) func(WriteTx) error {
		return func(tx WriteTx) error {
			cur, _ := Get[*shoalv1.Task](tx, "t1")
			c := proto.Clone(cur).(*shoalv1.Task)
			c.NodeId = node
			return tx.Update(c)
		}
	}
	status := func(tx WriteTx) error {
		cur, _ := Get[*shoalv1.Task](tx, "t1")
		return tx.UpdateTaskStatus("t1", cur.GetMeta().GetVersion(), goldRunning())
	}
	for name, steps := range map[string][]func(WriteTx) error{
		"update then status": {withNode("n2"), status},
		"status then update": {status, withNode("n2")},
	} {
		idx := mustUpdate(t, s, func(tx WriteTx) error {
			for _, st := range steps {
				if err := st(tx); err != nil {
					return err
				}
			}
			return nil
		})
		op := entryOp(t, s, idx)
		got, _ := Get[*shoalv1.Task](s.View(), "t1")
		if op.GetKind() != shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE || op.GetExpectedVersion() != v {
			t.Fatalf("%s: entry op %v", name, op)
		}
		if got.GetNodeId() != "n2" || got.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
			t.Fatalf("%s: stored %v", name, got)
		}
		// Back to the start for the next case.
		v = mustUpdate(t, s, func(tx WriteTx) error {
			cur, _ := Get[*shoalv1.Task](tx, "t1")
			c := proto.Clone(prev).(*shoalv1.Task)
			c.Meta = proto.Clone(cur.GetMeta()).(*shoalv1.Meta)
			return tx.Update(c)
		})
	}
	before := s.AppliedIndex()
	for name, fn := range map[string]func(WriteTx) error{
		"stale":   func(tx WriteTx) error { return tx.UpdateTaskStatus("t1", v-1, goldRunning()) },
		"zero":    func(tx WriteTx) error { return tx.UpdateTaskStatus("t1", 0, goldRunning()) },
		"missing": func(tx WriteTx) error { return tx.UpdateTaskStatus("nope", v, goldRunning()) },
	} {
		_, err := s.Update(context.Background(), fn)
		if err == nil {
			t.Fatalf("%s: no error", name)
		}
		if name == "stale" && !errors.Is(err, ErrVersionConflict) || name == "missing" && !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if s.AppliedIndex() != before {
		t.Fatal("a refused status update was proposed")
	}
}

// A TASK_STATUS op applies only as what it is: to a stored task at the
// named version, carrying nothing but the status. Anything else fails the
// entry whole, on every replica alike.
func TestFSMRejectsMalformedTaskStatus(t *testing.T) {
	f := newTestFSM()
	if err := applyDirect(t, f, 1, t0, opCreate(goldService()), opCreate(goldTask(0, nil))); err != nil {
		t.Fatal(err)
	}
	before := dump(f.view())
	extra := statusOp("t1", 1, goldRunning())
	extra.Object.GetTask().NodeId = "n9"
	for name, tc := range map[string]struct {
		op   *shoalv1.StoreOp
		want string
	}{
		"stale version":   {statusOp("t1", 7, goldRunning()), "stale"},
		"no version":      {statusOp("t1", 0, goldRunning()), "without the version"},
		"missing task":    {statusOp("t9", 1, goldRunning()), "not found"},
		"other fields":    {extra, "carrying node_id"},
		"not a task":      {&shoalv1.StoreOp{Kind: shoalv1.StoreOpKind_STORE_OP_KIND_TASK_STATUS, Object: Wrap(mkService("s1", "web")), ExpectedVersion: 1}, "status op for a service"},
		"a previous spec": {func() *shoalv1.StoreOp { op := statusOp("t1", 1, goldRunning()); op.PreviousSpecSource = 1; return op }(), "previous spec"},
	} {
		err := applyDirect(t, f, 2, t0, opCreate(mkNetwork("n1", "net")), tc.op)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
		if got := dump(f.view()); got != before {
			t.Errorf("%s: state changed:\n%s", name, got)
		}
	}
}

// Followers apply the compact op from their own stored task and end in the
// leader's state.
func TestFollowersApplyTaskStatus(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	c.update(createIfMissing(goldService(), goldTask(0, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED})))
	idx := c.update(func(tx WriteTx) error {
		cur, _ := Get[*shoalv1.Task](tx, "t1")
		if cur.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_RUNNING {
			return nil // a retry after a commit
		}
		return tx.UpdateTaskStatus("t1", cur.GetMeta().GetVersion(), goldRunning())
	})
	if op := entryOp(t, c.leader().store, idx); op.GetKind() != shoalv1.StoreOpKind_STORE_OP_KIND_TASK_STATUS {
		t.Fatalf("entry op %v", op)
	}
	c.converge(dump(c.leader().store.View()), idx)
	for _, nd := range c.nodes {
		task, _ := Get[*shoalv1.Task](nd.store.View(), "t1")
		svc, _ := Get[*shoalv1.Service](nd.store.View(), "s1")
		if task.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING || task.Spec != svc.GetSpec().GetTask() {
			t.Fatalf("%s: task %v does not share its service's spec", nd.id, task)
		}
	}
}

// A task whose spec equals its service's holds the service's very TaskSpec
// on every replica (and after a snapshot restore); a task whose spec
// differs keeps its own, and when the service moves on, an update of an
// old task keeps sharing the spec its stored version had.
func TestTasksShareTheirServiceSpec(t *testing.T) {
	f := newTestFSM()
	other := goldTask(0, nil)
	other.Meta.Id, other.Spec.Container.Image = "t2", "demo:v2"
	if err := applyDirect(t, f, 1, t0, opCreate(goldService()), opCreate(goldTask(0, nil)), opCreate(other)); err != nil {
		t.Fatal(err)
	}
	v := f.view()
	svc, _ := Get[*shoalv1.Service](v, "s1")
	t1, _ := Get[*shoalv1.Task](v, "t1")
	t2, _ := Get[*shoalv1.Task](v, "t2")
	if t1.Spec != svc.Spec.Task {
		t.Fatal("a task with its service's spec holds a copy")
	}
	if t2.Spec == svc.Spec.Task || t2.Spec.GetContainer().GetImage() != "demo:v2" {
		t.Fatalf("a task with another spec holds %v", t2.Spec)
	}
	// The service moves on; t1 is rewritten whole (a decoded copy).
	svc2 := goldService()
	svc2.Meta.Id, svc2.Spec.Task.Container.Image, svc2.SpecVersion = "s1", "demo:v3", 2
	if err := applyDirect(t, f, 2, t0, opUpdate(svc2, 1), opUpdate(goldTask(1, goldRunning()), 1)); err != nil {
		t.Fatal(err)
	}
	t1b, _ := Get[*shoalv1.Task](f.view(), "t1")
	if t1b.Spec != t1.Spec {
		t.Fatal("an update of an old task does not share the spec its stored version had")
	}
	// A snapshot restore shares too.
	if err := applyDirect(t, f, 3, t0, opUpdate(goldService(), 2)); err != nil { // back to t1's spec
		t.Fatal(err)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	restored := newTestFSM()
	if err := restored.Restore(readCloser{bytes.NewReader(sink.Bytes())}); err != nil {
		t.Fatal(err)
	}
	rsvc, _ := Get[*shoalv1.Service](restored.view(), "s1")
	rt1, _ := Get[*shoalv1.Task](restored.view(), "t1")
	if rt1.Spec != rsvc.Spec.Task {
		t.Fatal("a restored task holds a copy of its service's spec")
	}
	if dump(restored.view()) != dump(f.view()) {
		t.Fatal("the restored state differs")
	}
}

// A rolling upgrade: three managers, one still of the release before
// TASK_STATUS (its node reports store format 2). That release refuses an
// op kind it does not know, so no entry in any manager's log may be one;
// each log replayed by it gives the state this release keeps. Once the
// manager reports StoreFormat, statuses go out compact.
func TestRollingUpgradeOldManagerGetsWholeTaskStatus(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	var objs []Object
	for i, nd := range c.nodes {
		format := StoreFormat
		if i == 2 {
			format = StoreFormat - 1 // the manager not upgraded yet
		}
		objs = append(objs, gateNode(nd.id, roleManager, roleManager, format))
	}
	// The managers' nodes first: the gate counts the state an entry is
	// built on (in a cluster, managers register before tasks exist).
	c.update(createIfMissing(objs...))
	c.update(createIfMissing(goldService(), goldTask(0, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED})))
	setState := func(state shoalv1.TaskState) uint64 {
		return c.update(func(tx WriteTx) error {
			cur, _ := Get[*shoalv1.Task](tx, "t1")
			if cur.GetStatus().GetState() == state {
				return nil // a retry after a commit
			}
			return tx.UpdateTaskStatus("t1", cur.GetMeta().GetVersion(), &shoalv1.TaskStatus{State: state})
		})
	}
	idx := setState(shoalv1.TaskState_TASK_STATE_ACCEPTED)
	c.converge(dump(c.leader().store.View()), idx)
	for _, nd := range c.nodes {
		for i := uint64(1); i <= idx; i++ {
			var l raft.Log
			if err := nd.store.logs.GetLog(i, &l); err != nil || l.Type != raft.LogCommand {
				continue
			}
			act := new(shoalv1.StoreAction)
			if err := proto.Unmarshal(l.Data, act); err != nil {
				t.Fatal(err)
			}
			for _, op := range act.GetOps() {
				if op.GetKind() > shoalv1.StoreOpKind_STORE_OP_KIND_DELETE {
					t.Fatalf("%s: entry %d has a %v op while a manager is old", nd.id, i, op.GetKind())
				}
			}
		}
		old := replayAsPreviousRelease(t, nd.store, idx)
		if dump(old.view()) != dump(nd.store.View()) {
			t.Fatalf("%s: the previous release replays\n%s\nthis release stores\n%s", nd.id, dump(old.view()), dump(nd.store.View()))
		}
	}
	// The last manager upgraded: statuses go out compact.
	c.update(func(tx WriteTx) error {
		n, _ := Get[*shoalv1.Node](tx, c.nodes[2].id)
		if n.GetDescription().GetStoreFormat() == StoreFormat {
			return nil
		}
		n = proto.Clone(n).(*shoalv1.Node)
		n.Description.StoreFormat = StoreFormat
		return tx.Update(n)
	})
	idx = setState(shoalv1.TaskState_TASK_STATE_RUNNING)
	if op := entryOp(t, c.leader().store, idx); op.GetKind() != shoalv1.StoreOpKind_STORE_OP_KIND_TASK_STATUS {
		t.Fatalf("with every manager upgraded the entry op is %v", op)
	}
	c.converge(dump(c.leader().store.View()), idx)
}
