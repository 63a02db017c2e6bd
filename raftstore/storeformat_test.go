package raftstore

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// gateNode is a node object: its certificate role, wanted role and the
// store format its description reports (-1: no description reported yet).
func gateNode(id string, role, desired shoalv1.NodeRole, format int) *shoalv1.Node {
	n := &shoalv1.Node{Meta: &shoalv1.Meta{Id: id}, Spec: &shoalv1.NodeSpec{DesiredRole: desired}, Role: role}
	if format >= 0 {
		n.Description = &shoalv1.NodeDescription{Hostname: id, StoreFormat: uint32(format)}
	}
	return n
}

const (
	roleManager = shoalv1.NodeRole_NODE_ROLE_MANAGER
	roleWorker  = shoalv1.NodeRole_NODE_ROLE_WORKER
)

// The count of managers not reporting StoreFormat follows every node write
// incrementally, equals a count from scratch after every entry, and is the
// same after a snapshot restore.
func TestOldManagerCount(t *testing.T) {
	steps := []struct {
		name string
		ops  []*shoalv1.StoreOp
		want int
	}{
		{"a worker without description", []*shoalv1.StoreOp{opCreate(gateNode("w1", roleWorker, roleWorker, -1))}, 0},
		{"a manager joined, no description yet", []*shoalv1.StoreOp{opCreate(gateNode("m1", roleManager, roleManager, -1))}, 1},
		{"its description reported", []*shoalv1.StoreOp{opUpdate(gateNode("m1", roleManager, roleManager, StoreFormat), 0)}, 0},
		{"a manager of the previous release", []*shoalv1.StoreOp{opCreate(gateNode("m2", roleManager, roleManager, 0))}, 1},
		{"it is demoted (wanted role first)", []*shoalv1.StoreOp{opUpdate(gateNode("m2", roleManager, roleWorker, 0), 0)}, 1},
		{"its certificate is a worker's", []*shoalv1.StoreOp{opUpdate(gateNode("m2", roleWorker, roleWorker, 0), 0)}, 0},
		{"a worker with an old description promoted", []*shoalv1.StoreOp{opUpdate(gateNode("m2", roleWorker, roleManager, 1), 0)}, 1},
		{"a newer format than ours counts as reading ours", []*shoalv1.StoreOp{opUpdate(gateNode("m1", roleManager, roleManager, StoreFormat+1), 0)}, 1},
		{"the old one upgraded, a worker changed in the same entry", []*shoalv1.StoreOp{
			opUpdate(gateNode("m2", roleWorker, roleManager, StoreFormat), 0),
			opUpdate(gateNode("w1", roleWorker, roleWorker, 0), 0),
		}, 0},
		{"two old managers in one entry", []*shoalv1.StoreOp{
			opCreate(gateNode("m3", roleManager, roleManager, 0)),
			opCreate(gateNode("m4", roleManager, roleManager, -1)),
		}, 2},
		{"a refused entry changes nothing", []*shoalv1.StoreOp{
			opUpdate(gateNode("m3", roleManager, roleManager, StoreFormat), 0),
			opUpdate(gateNode("missing", roleManager, roleManager, 0), 0),
		}, 2},
		{"an old manager removed", []*shoalv1.StoreOp{opDelete(KindNode, "m3", 0)}, 1},
		{"a deleted and re-created node in one entry", []*shoalv1.StoreOp{
			opDelete(KindNode, "m4", 0),
			opCreate(gateNode("m4", roleManager, roleManager, StoreFormat)),
		}, 0},
		{"a worker removed", []*shoalv1.StoreOp{opDelete(KindNode, "w1", 0)}, 0},
	}
	f := newTestFSM()
	for i, st := range steps {
		index := uint64(i + 1)
		_ = applyDirect(t, f, index, t0, st.ops...) // the refused one is part of the table
		if got := f.view().oldManagers; got != st.want {
			t.Fatalf("%s: count %d, want %d", st.name, got, st.want)
		}
		if scan := countOldManagers(f.db); scan != st.want {
			t.Fatalf("%s: a count from scratch says %d, want %d", st.name, scan, st.want)
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
		// A stale count before the restore must not survive it.
		_ = applyDirect(t, restored, 1, t0, opCreate(gateNode("stale", roleManager, roleManager, 0)))
		if err := restored.Restore(readCloser{bytes.NewReader(sink.Bytes())}); err != nil {
			t.Fatal(err)
		}
		if got := restored.view().oldManagers; got != st.want {
			t.Fatalf("%s: restored count %d, want %d", st.name, got, st.want)
		}
	}
}

// updateSpec is an update that keeps the stored spec as previous_spec, the
// one form the compact entry applies to.
func updateSpec(id, label string) func(WriteTx) error {
	return func(tx WriteTx) error {
		cur, ok := Get[*shoalv1.Service](tx, id)
		if !ok {
			return fmt.Errorf("no service %s", id)
		}
		spec := proto.Clone(cur.GetSpec()).(*shoalv1.ServiceSpec)
		spec.Labels = map[string]string{"v": label}
		return tx.Update(&shoalv1.Service{Meta: proto.Clone(cur.GetMeta()).(*shoalv1.Meta), Spec: spec, PreviousSpec: cur.GetSpec()})
	}
}

// entryOp decodes the first op of the entry at idx in raft's log of s.
func entryOp(t *testing.T, s *Store, idx uint64) *shoalv1.StoreOp {
	t.Helper()
	var l raft.Log
	if err := s.logs.GetLog(idx, &l); err != nil {
		t.Fatal(err)
	}
	act := new(shoalv1.StoreAction)
	if err := proto.Unmarshal(l.Data, act); err != nil {
		t.Fatal(err)
	}
	return act.GetOps()[0]
}

// While one manager does not report StoreFormat, a service update carries
// previous_spec in its entry; once every manager does, it is left out.
func TestUpdateKeepsPreviousSpecWhileAManagerIsOld(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, func(tx WriteTx) error {
		for _, n := range []*shoalv1.Node{
			gateNode("m1", roleManager, roleManager, StoreFormat),
			gateNode("m2", roleManager, roleManager, 0),
			gateNode("w1", roleWorker, roleWorker, 0), // workers do not count
		} {
			if err := tx.Create(n); err != nil {
				return err
			}
		}
		return tx.Create(mkService("s1", "web"))
	})
	idx := mustUpdate(t, s, updateSpec("s1", "old-manager"))
	op := entryOp(t, s, idx)
	if op.GetPreviousSpecSource() != shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_IN_OBJECT || op.GetObject().GetService().GetPreviousSpec() == nil {
		t.Fatalf("with an old manager the entry has source %v, previous_spec %v", op.GetPreviousSpecSource(), op.GetObject().GetService().GetPreviousSpec())
	}
	mustUpdate(t, s, func(tx WriteTx) error {
		n, _ := Get[*shoalv1.Node](tx, "m2")
		n = proto.Clone(n).(*shoalv1.Node)
		n.Description.StoreFormat = StoreFormat
		return tx.Update(n)
	})
	idx = mustUpdate(t, s, updateSpec("s1", "all-new"))
	op = entryOp(t, s, idx)
	if op.GetPreviousSpecSource() != shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_STORED_SPEC || op.GetObject().GetService().GetPreviousSpec() != nil {
		t.Fatalf("with every manager new the entry has source %v, previous_spec %v", op.GetPreviousSpecSource(), op.GetObject().GetService().GetPreviousSpec())
	}
	if got, _ := Get[*shoalv1.Service](s.View(), "s1"); got.GetPreviousSpec().GetLabels()["v"] != "old-manager" {
		t.Fatalf("stored previous_spec %v", got.GetPreviousSpec())
	}
}

// A rolling upgrade: three managers, one of which still runs the previous
// release (its node reports store format 0). Each manager's raft log,
// replayed the way that release applies it (it does not know
// previous_spec_source, so it stores the op's object as is), must give the
// state this release keeps: the service keeps its previous_spec everywhere.
func TestRollingUpgradeOldManagerKeepsPreviousSpec(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	var nodes []Object
	for i, nd := range c.nodes {
		format := StoreFormat
		if i == 2 {
			format = 0 // the manager not upgraded yet
		}
		nodes = append(nodes, gateNode(nd.id, roleManager, roleManager, format))
	}
	c.update(createIfMissing(append(nodes, mkService("s1", "web"))...))
	idx := c.update(updateSpec("s1", "v2"))
	c.eventually("every manager applied the update", func() error {
		for _, nd := range c.nodes {
			if nd.store.AppliedIndex() < idx {
				return fmt.Errorf("%s applied %d < %d", nd.id, nd.store.AppliedIndex(), idx)
			}
		}
		return nil
	})
	for _, nd := range c.nodes {
		stored, ok := Get[*shoalv1.Service](nd.store.View(), "s1")
		if !ok || stored.GetPreviousSpec() == nil {
			t.Fatalf("%s: stored service %v has no previous_spec", nd.id, stored)
		}
		old := replayAsPreviousRelease(t, nd.store, idx)
		if got, _ := Get[*shoalv1.Service](old.view(), "s1"); !proto.Equal(got.GetPreviousSpec(), stored.GetPreviousSpec()) {
			t.Fatalf("%s: the previous release replays previous_spec %v, this release stores %v", nd.id, got.GetPreviousSpec(), stored.GetPreviousSpec())
		}
	}
}

// replayAsPreviousRelease applies s's raft log up to last to a fresh FSM
// as the release before StoreFormat 2 would: previous_spec_source ignored.
func replayAsPreviousRelease(t *testing.T, s *Store, last uint64) *fsm {
	t.Helper()
	first, err := s.logs.FirstIndex()
	if err != nil || first != 1 {
		t.Fatalf("log starts at %d (%v); the test needs it whole", first, err)
	}
	f := newTestFSM()
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := s.logs.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		if l.Type != raft.LogCommand {
			continue
		}
		act := new(shoalv1.StoreAction)
		if err := proto.Unmarshal(l.Data, act); err != nil {
			t.Fatal(err)
		}
		for _, op := range act.GetOps() {
			op.PreviousSpecSource = shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_IN_OBJECT
		}
		data, err := proto.Marshal(act)
		if err != nil {
			t.Fatal(err)
		}
		if res := f.Apply(&raft.Log{Index: i, Type: raft.LogCommand, Data: data}); res != nil {
			t.Fatalf("entry %d: %v", i, res)
		}
	}
	return f
}
