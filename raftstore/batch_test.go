package raftstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// entry encodes ops as the raft command entry at index.
func entry(t testing.TB, index uint64, ops ...*shoalv1.StoreOp) *raft.Log {
	t.Helper()
	data, err := proto.Marshal(&shoalv1.StoreAction{Ops: ops, Time: timestamppb.New(t0.Add(time.Duration(index) * time.Second))})
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: index, Type: raft.LogCommand, Data: data}
}

// applyOneByOne feeds logs to f one entry at a time, each in a transaction
// of its own (Apply, StoreConfiguration): the reference a batch must match.
func applyOneByOne(f *fsm, logs []*raft.Log) []any {
	res := make([]any, len(logs))
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			res[i] = f.Apply(l)
		} else {
			f.StoreConfiguration(l.Index, raft.Configuration{})
		}
	}
	return res
}

// stateOf renders everything a reader of f can tell apart: the applied
// index, the old-manager count, every object, and every index's keys in
// order (so an entry undone in memdb's id table but left in a secondary
// index would show).
func stateOf(t testing.TB, f *fsm) string {
	t.Helper()
	v := f.view()
	var b strings.Builder
	fmt.Fprintf(&b, "applied %d old managers %d (from scratch %d)\n", v.index, v.oldManagers, countOldManagers(f.db))
	b.WriteString(dump(v))
	for _, kind := range Kinds {
		for _, name := range slices.Sorted(maps.Keys(tableDefs[kind].indexes)) {
			it, err := v.txn.Get(string(kind), name)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s/%s:", kind, name)
			for raw := it.Next(); raw != nil; raw = it.Next() {
				o := raw.(Object)
				val, _ := tableDefs[kind].indexes[name](o)
				fmt.Fprintf(&b, " %s=%s", val, o.GetMeta().GetId())
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// eventsOf renders the events f's hub published, with the index each was
// published under, and the hub's last index.
func eventsOf(t testing.TB, f *fsm) string {
	t.Helper()
	f.hub.mu.Lock()
	defer f.hub.mu.Unlock()
	var b strings.Builder
	for _, e := range f.hub.ring {
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(e.ev)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%d %x\n", e.index, data)
	}
	fmt.Fprintf(&b, "last %d\n", f.hub.last)
	return b.String()
}

func resultsOf(res []any) string {
	var b strings.Builder
	for i, r := range res {
		switch r := r.(type) {
		case nil:
			fmt.Fprintf(&b, "%d: ok\n", i)
		case error:
			fmt.Fprintf(&b, "%d: %v\n", i, r)
		default:
			fmt.Fprintf(&b, "%d: %T %v\n", i, r, r)
		}
	}
	return b.String()
}

// A batch with failing entries in the middle: the others apply as they
// would one by one, a failed entry leaves no trace (not its ops before the
// failing one, not in any index), each entry's result is in its slot and
// each entry's events carry its own index.
func TestApplyBatchFailingMiddleEntries(t *testing.T) {
	setup := func(t *testing.T) *fsm {
		f := newFSM(slog.New(slog.DiscardHandler), newHub(1<<12))
		if err := applyDirect(t, f, 10, t0, opCreate(mkService("s1", "web")), opCreate(mkService("s2", "db")),
			opCreate(mkTask("t1", "s1", "n1", 0, 0))); err != nil {
			t.Fatal(err)
		}
		return f
	}
	logs := []*raft.Log{
		entry(t, 11, opCreate(mkTask("t2", "s1", "", 0, 0)), opUpdate(mkService("s1", "web2"), 10)),
		// Creates t3, renames s2 and updates t2 before failing on a
		// stale version: none of it may stay.
		entry(t, 12, opCreate(mkTask("t3", "s2", "n2", 0, 0)), opUpdate(mkService("s2", "db2"), 10),
			opUpdate(mkTask("t2", "s1", "n9", 0, 0), 11), opUpdate(mkService("s1", "web3"), 10)),
		{Index: 13, Type: raft.LogCommand, Data: []byte{0xff, 0xff}},
		{Index: 14, Type: raft.LogConfiguration},
		// Deletes t1 and takes the name entry 11 gave s1: fails on the
		// name check, after every op was written.
		entry(t, 15, opDelete(KindTask, "t1", 10), opCreate(mkService("s3", "web2"))),
		// Builds on entry 11 (t2 at 11) and on entry 12 not having
		// happened (s2 still at 10).
		entry(t, 16, opUpdate(mkTask("t2", "s1", "n1", 0, 0), 11), opUpdate(mkService("s2", "db3"), 10), opDelete(KindTask, "t1", 10)),
		// Fails at once, after a failure undone in the same transaction.
		entry(t, 17, opDelete(KindTask, "t3", 0)),
		entry(t, 18, opCreate(mkTask("t3", "s2", "", 0, 0))),
	}
	wantErrs := map[int]error{1: ErrVersionConflict, 4: ErrExists, 6: ErrNotFound}

	for _, txnOps := range []int{0, 1, 3} {
		t.Run(fmt.Sprintf("txnOps=%d", txnOps), func(t *testing.T) {
			ref := setup(t)
			want := applyOneByOne(ref, logs)
			f := setup(t)
			f.txnOps = txnOps
			got := f.ApplyBatch(logs)
			if len(got) != len(logs) {
				t.Fatalf("%d results for %d entries", len(got), len(logs))
			}
			for i, r := range got {
				err, _ := r.(error)
				switch {
				case i == 2:
					if err == nil || !strings.Contains(err.Error(), "raft entry 13: decoding") {
						t.Errorf("slot 2 (undecodable): %v", r)
					}
				case wantErrs[i] != nil:
					if !errors.Is(err, wantErrs[i]) {
						t.Errorf("slot %d: %v, want %v", i, r, wantErrs[i])
					}
				case r != nil:
					t.Errorf("slot %d: %v, want nil", i, r)
				}
			}
			if resultsOf(got) != resultsOf(want) {
				t.Errorf("results:\n%s\none by one:\n%s", resultsOf(got), resultsOf(want))
			}
			if a, b := stateOf(t, f), stateOf(t, ref); a != b {
				t.Fatalf("state after the batch:\n%s\none by one:\n%s", a, b)
			}
			v := f.view()
			if v.Index() != 18 {
				t.Fatalf("applied %d, want 18", v.Index())
			}
			if s := v.Get(KindService, "s1"); s.(*shoalv1.Service).GetSpec().GetName() != "web2" || s.GetMeta().GetVersion() != 11 {
				t.Fatalf("s1 = %v", s)
			}
			if s := v.Get(KindService, "s2"); s.(*shoalv1.Service).GetSpec().GetName() != "db3" || s.GetMeta().GetVersion() != 16 {
				t.Fatalf("s2 = %v", s)
			}
			if v.Get(KindService, "s3") != nil || v.Get(KindTask, "t1") != nil {
				t.Fatalf("entry 15 left a trace:\n%s", dump(v))
			}
			if tk := v.Get(KindTask, "t3").(*shoalv1.Task); tk.GetMeta().GetVersion() != 18 || tk.GetNodeId() != "" {
				t.Fatalf("t3 = %v (entry 12 left a trace?)", tk)
			}
			if got := ids(Find[*shoalv1.Task](v, IndexNodeID, "n2")); len(got) != 0 {
				t.Fatalf("tasks on n2 (entry 12's t3): %v", got)
			}
			// Events: one per op of the entries that applied, under their
			// own index, in index order.
			var idx []uint64
			f.hub.mu.Lock()
			for _, e := range f.hub.ring {
				if e.ev.GetIndex() != e.index {
					t.Errorf("event of entry %d published under %d", e.ev.GetIndex(), e.index)
				}
				idx = append(idx, e.index)
			}
			f.hub.mu.Unlock()
			if fmt.Sprint(idx) != "[10 10 10 11 11 16 16 16 18]" {
				t.Fatalf("event indexes %v", idx)
			}
			if a, b := eventsOf(t, f), eventsOf(t, ref); a != b {
				t.Fatalf("events:\n%s\none by one:\n%s", a, b)
			}
		})
	}
}

// A subscriber sees an entry's events only once the entry's transaction is
// committed and the applied index covers it, so a view taken on an event
// holds the entry and everything else of its transaction, never a part of
// one; with smaller transactions, the view holds exactly its own.
func TestApplyBatchViewsSeeWholeTransactions(t *testing.T) {
	for _, tc := range []struct {
		txnOps int
		// want maps an entry to the applied index a view taken on its
		// event must have: the last entry of its transaction.
		want map[uint64]uint64
	}{
		{0, map[uint64]uint64{1: 6, 2: 6, 3: 6, 5: 6, 6: 6}},
		{2, map[uint64]uint64{1: 2, 2: 2, 3: 4, 5: 6, 6: 6}},
	} {
		t.Run(fmt.Sprintf("txnOps=%d", tc.txnOps), func(t *testing.T) {
			f := newFSM(slog.New(slog.DiscardHandler), newHub(0))
			f.txnOps = tc.txnOps
			type seen struct {
				event, applied uint64
				tasks          int
			}
			var views []seen
			// keep runs inside publish, once per event when it wants
			// none; the FSM holds no lock then, so a view may be taken
			// here (a test's liberty).
			sub, err := f.hub.watchFiltered(context.Background(), 0, nil, func(ev *shoalv1.WatchEvent) bool {
				v := f.view()
				views = append(views, seen{ev.GetIndex(), v.Index(), len(v.List(KindTask))})
				return false
			})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			logs := []*raft.Log{
				entry(t, 1, opCreate(mkTask("t1", "", "", 0, 0))),
				entry(t, 2, opCreate(mkTask("t2", "", "", 0, 0))),
				entry(t, 3, opCreate(mkTask("t3", "", "", 0, 0))),
				entry(t, 4, opCreate(mkTask("t1", "", "", 0, 0))), // exists: refused
				entry(t, 5, opCreate(mkTask("t5", "", "", 0, 0))),
				entry(t, 6, opCreate(mkTask("t6", "", "", 0, 0))),
			}
			f.ApplyBatch(logs)
			if len(views) != 5 {
				t.Fatalf("views taken on %d events, want 5", len(views))
			}
			for _, s := range views {
				w := tc.want[s.event]
				// Entry 4 created nothing: tasks = entries up to w, less one
				// once w passes 4.
				wantTasks := int(w)
				if w >= 4 {
					wantTasks--
				}
				if s.applied != w || s.tasks != wantTasks {
					t.Errorf("on entry %d's event: view at %d with %d tasks, want %d with %d", s.event, s.applied, s.tasks, w, wantTasks)
				}
			}
		})
	}
}

// The old-manager count after a batch equals the count after applying the
// same entries one by one, and a count from scratch: a node written by
// several entries of one transaction, created and deleted within it, and
// touched by a refused entry.
func TestApplyBatchOldManagerCount(t *testing.T) {
	logs := []*raft.Log{
		entry(t, 1, opCreate(gateNode("w1", roleWorker, roleWorker, -1))),
		entry(t, 2, opCreate(gateNode("m1", roleManager, roleManager, -1))),
		entry(t, 3, opUpdate(gateNode("m1", roleManager, roleManager, StoreFormat), 0)),
		entry(t, 4, opCreate(gateNode("m2", roleManager, roleManager, 0))),
		entry(t, 5, opUpdate(gateNode("m2", roleManager, roleWorker, 0), 0)),
		// Refused after writing m1 back to old and m3 as old.
		entry(t, 6, opUpdate(gateNode("m1", roleManager, roleManager, 0), 0),
			opCreate(gateNode("m3", roleManager, roleManager, 0)), opUpdate(gateNode("nope", roleManager, roleManager, 0), 0)),
		entry(t, 7, opCreate(gateNode("m4", roleManager, roleManager, 0))),
		entry(t, 8, opDelete(KindNode, "m4", 0), opUpdate(gateNode("w1", roleWorker, roleManager, 1), 0)),
		entry(t, 9, opCreate(gateNode("m4", roleManager, roleManager, -1))),
	}
	for _, cut := range [][]int{{9}, {1, 8}, {5, 4}, {3, 3, 3}} {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			ref := newTestFSM()
			applyOneByOne(ref, logs)
			f := newTestFSM()
			at := 0
			for _, n := range cut {
				f.ApplyBatch(logs[at : at+n])
				at += n
			}
			if f.oldManagers != ref.oldManagers || f.oldManagers != countOldManagers(f.db) {
				t.Fatalf("old managers %d, one by one %d, from scratch %d", f.oldManagers, ref.oldManagers, countOldManagers(f.db))
			}
			if a, b := stateOf(t, f), stateOf(t, ref); a != b {
				t.Fatalf("state:\n%s\none by one:\n%s", a, b)
			}
		})
	}
}

// If undoing a failed entry inside a transaction failed, the batch falls
// back to applying the transaction's entries one by one: the same results
// and state as ever.
func TestApplyBatchUndoFailureFallsBack(t *testing.T) {
	logs := []*raft.Log{
		entry(t, 1, opCreate(mkService("s1", "web"))),
		entry(t, 2, opCreate(mkTask("t1", "s1", "", 0, 0)), opCreate(mkService("s2", "web"))),
		entry(t, 3, opCreate(mkTask("t2", "s1", "", 0, 0))),
	}
	ref := newTestFSM()
	want := applyOneByOne(ref, logs)
	f := newTestFSM()
	f.undoFault = errors.New("injected")
	got := f.ApplyBatch(logs)
	if resultsOf(got) != resultsOf(want) || !errors.Is(got[1].(error), ErrExists) {
		t.Fatalf("results:\n%s\none by one:\n%s", resultsOf(got), resultsOf(want))
	}
	if a, b := stateOf(t, f), stateOf(t, ref); a != b {
		t.Fatalf("state:\n%s\none by one:\n%s", a, b)
	}
	if a, b := eventsOf(t, f), eventsOf(t, ref); a != b {
		t.Fatalf("events:\n%s\none by one:\n%s", a, b)
	}
}

// Randomized: entries over a few objects (so that versions go stale, names
// collide, objects are deleted and re-created, nodes turn old and new),
// some undecodable, some configuration changes, applied one by one and as
// batches cut at random with transactions of random size: the same results
// in every slot, the same state (objects and every index), the same events
// under the same indexes, the same old-manager count.
func TestApplyBatchMatchesApply(t *testing.T) {
	batchMatchesApply(t, 7, randomEntry, func(*fsm) string { return "" })
}

// batchMatchesApply runs 40 seeds of 300 entries from gen, applied one by
// one and as random batches with transactions of random size, and compares
// results, state (plus extra's), and events.
func batchMatchesApply(t *testing.T, salt uint64, gen func(testing.TB, *rand.Rand, Reader, uint64) *raft.Log, extra func(*fsm) string) {
	for seed := uint64(1); seed <= 40; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, salt))
			ref := newFSM(slog.New(slog.DiscardHandler), newHub(1<<16))
			var logs []*raft.Log
			var want []any
			for index := uint64(1); index <= 300; index++ {
				l := gen(t, rng, ref.view(), index)
				logs = append(logs, l)
				want = append(want, applyOneByOne(ref, []*raft.Log{l})...)
			}
			failed := 0
			for _, r := range want {
				if r != nil {
					failed++
				}
			}
			if failed < 30 || failed > 270 {
				t.Fatalf("%d of %d entries failed: the generator should exercise both", failed, len(want))
			}

			f := newFSM(slog.New(slog.DiscardHandler), newHub(1<<16))
			f.txnOps = []int{0, 1, 2, 5, 17}[rng.IntN(5)]
			var got []any
			for at := 0; at < len(logs); {
				n := min(1+rng.IntN(64), len(logs)-at)
				got = append(got, f.ApplyBatch(logs[at:at+n])...)
				at += n
			}
			if a, b := resultsOf(got), resultsOf(want); a != b {
				t.Fatalf("results:\n%s\none by one:\n%s", a, b)
			}
			if a, b := stateOf(t, f)+extra(f), stateOf(t, ref)+extra(ref); a != b {
				t.Fatalf("state:\n%s\none by one:\n%s", a, b)
			}
			if a, b := eventsOf(t, f), eventsOf(t, ref); a != b {
				t.Fatalf("events differ:\n%s\none by one:\n%s", a, b)
			}
		})
	}
}

// randomEntry builds entry index from the reference state r: 1-4 ops on
// objects drawn from small sets, with the right version most of the time.
func randomEntry(t testing.TB, rng *rand.Rand, r Reader, index uint64) *raft.Log {
	switch rng.IntN(40) {
	case 0:
		return &raft.Log{Index: index, Type: raft.LogCommand, Data: []byte{0xff, byte(rng.IntN(256))}}
	case 1:
		return &raft.Log{Index: index, Type: raft.LogConfiguration}
	}
	version := func(kind Kind, id string) uint64 { return randomVersion(rng, r, kind, id, index, 6) }
	var ops []*shoalv1.StoreOp
	for range 1 + rng.IntN(4) {
		var o Object
		switch rng.IntN(3) {
		case 0:
			o = mkService(fmt.Sprintf("s%d", rng.IntN(5)), fmt.Sprintf("name%d", rng.IntN(4)))
		case 1:
			st := []shoalv1.TaskState{shoalv1.TaskState_TASK_STATE_PENDING, shoalv1.TaskState_TASK_STATE_RUNNING}[rng.IntN(2)]
			o = mkTask(fmt.Sprintf("t%d", rng.IntN(8)), fmt.Sprintf("s%d", rng.IntN(5)), fmt.Sprintf("n%d", rng.IntN(3)), 0, st)
		default:
			roles := []shoalv1.NodeRole{roleWorker, roleManager}
			o = gateNode(fmt.Sprintf("n%d", rng.IntN(4)), roles[rng.IntN(2)], roles[rng.IntN(2)], rng.IntN(StoreFormat+2)-1)
		}
		kind, id := KindOf(o), o.GetMeta().GetId()
		exists := r.Get(kind, id) != nil
		switch k := rng.IntN(10); {
		case k < 3 && !exists || k == 0:
			ops = append(ops, opCreate(o))
		case k < 8:
			ops = append(ops, opUpdate(o, version(kind, id)))
		default:
			ops = append(ops, opDelete(kind, id, version(kind, id)))
		}
	}
	return entry(t, index, ops...)
}

// BenchmarkApplyBatch: the FSM's cost per entry, one transaction per entry
// (Apply) against one per batch (ApplyBatch), for the two shapes that
// dominate: 256 writers' single-service updates arriving together, and the
// scheduler's entries of 1,000 task assignments, 8 to a batch. Entries are
// decoded in both (a follower's path).
func BenchmarkApplyBatch(b *testing.B) {
	type shape struct {
		name    string
		setup   []*shoalv1.StoreOp
		entries int
		entry   func(e int) []*shoalv1.StoreOp
	}
	var services, tasks []*shoalv1.StoreOp
	for i := range 256 {
		services = append(services, opCreate(benchService(fmt.Sprintf("s%03d", i), 0)))
	}
	for i := range 100_000 {
		tasks = append(tasks, opCreate(mkTask(fmt.Sprintf("t%06d", i), "s1", "", 0, shoalv1.TaskState_TASK_STATE_PENDING)))
	}
	shapes := []shape{
		{"service-updates-256", services, 256, func(e int) []*shoalv1.StoreOp {
			return []*shoalv1.StoreOp{opUpdate(benchService(fmt.Sprintf("s%03d", e), 0), 0)}
		}},
		{"task-assignments-8x1000", tasks, 8, func(e int) []*shoalv1.StoreOp {
			ops := make([]*shoalv1.StoreOp, 0, 1000)
			for i := e * 1000; i < (e+1)*1000; i++ {
				ops = append(ops, opUpdate(mkTask(fmt.Sprintf("t%06d", i), "s1", fmt.Sprintf("n%04d", i%1000), 0, shoalv1.TaskState_TASK_STATE_ASSIGNED), 0))
			}
			return ops
		}},
	}
	for _, sh := range shapes {
		var logs []*raft.Log
		for e := range sh.entries {
			logs = append(logs, entry(b, uint64(e+2), sh.entry(e)...))
		}
		for _, mode := range []string{"one-by-one", "batch"} {
			b.Run(sh.name+"/"+mode, func(b *testing.B) {
				f := newTestFSM()
				for at := 0; at < len(sh.setup); at += 1000 {
					if err := applyDirect(b, f, 1, t0, sh.setup[at:min(at+1000, len(sh.setup))]...); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					var res []any
					if mode == "batch" {
						res = f.ApplyBatch(logs)
					} else {
						res = applyOneByOne(f, logs)
					}
					if res[0] != nil {
						b.Fatal(res[0])
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(logs)), "ns/entry")
			})
		}
	}
}

// ApplyBatch tells each waiting Update that its entry is done, applied or
// refused, with its own verdict and index, as soon as its transaction is
// committed: before the batch's later transactions are applied (raft
// answers the futures only once ApplyBatch returns).
func TestApplyBatchSignalsProposals(t *testing.T) {
	f := newTestFSM()
	f.txnOps = 1
	var logs []*raft.Log
	var props []*proposal
	for i, op := range []*shoalv1.StoreOp{opCreate(mkService("s1", "web")), opCreate(mkService("s2", "web")), opCreate(mkService("s3", "db"))} {
		act := &shoalv1.StoreAction{Ops: []*shoalv1.StoreOp{op}, Time: timestamppb.New(t0)}
		data, err := proto.Marshal(act)
		if err != nil {
			t.Fatal(err)
		}
		p, release := f.proposeEntry(data, act, nil)
		defer release()
		props = append(props, p)
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: data})
	}
	// On entry 3's event (its own transaction, inside ApplyBatch), the
	// first two are answered already.
	var early []string
	sub, err := f.hub.watchFiltered(context.Background(), 0, nil, func(ev *shoalv1.WatchEvent) bool {
		if ev.GetIndex() == 3 {
			for i, p := range props[:2] {
				select {
				case <-p.applied:
					early = append(early, fmt.Sprintf("%d: %d %v", i+1, p.index, p.result))
				default:
					early = append(early, fmt.Sprintf("%d: waiting", i+1))
				}
			}
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	res := f.ApplyBatch(logs)
	if res[0] != nil || !errors.Is(res[1].(error), ErrExists) || res[2] != nil {
		t.Fatalf("results:\n%s", resultsOf(res))
	}
	if want := fmt.Sprintf("[1: 1 <nil> 2: 2 %v]", res[1]); fmt.Sprint(early) != want {
		t.Fatalf("on entry 3's event: %v, want %v", early, want)
	}
	for i, p := range props {
		select {
		case <-p.applied:
		default:
			t.Fatalf("entry %d's proposal not signalled", i+1)
		}
		if p.index != uint64(i+1) || p.result != res[i] {
			t.Fatalf("entry %d's proposal: index %d, verdict %v; want %d, %v", i+1, p.index, p.result, i+1, res[i])
		}
	}
	if v := f.view(); v.Index() != 3 || v.Get(KindService, "s3") == nil || v.Get(KindService, "s2") != nil {
		t.Fatalf("state at %d:\n%s", v.Index(), dump(v))
	}
}

// TestApplyBatchMatchesApplyTaskStatusAndSpecs is TestApplyBatchMatchesApply
// for the task forms of store format 3: services and tasks carrying task
// specs (interned at apply: a task shares its service's or its stored
// version's spec), compact TASK_STATUS ops (valid, stale, without a
// version, carrying more than meta and status, for a missing task) mixed
// with whole-task writes in failing and succeeding entries. A batch must
// leave the state, results, events and which tasks share their service's
// spec exactly as entry-by-entry apply does.
func TestApplyBatchMatchesApplyTaskStatusAndSpecs(t *testing.T) {
	batchMatchesApply(t, 11, randomTaskEntry, sharingOf)
}

// sharingOf lists the tasks holding their service's very TaskSpec.
func sharingOf(f *fsm) string {
	v := f.view()
	var b strings.Builder
	b.WriteString("sharing:")
	for _, tk := range List[*shoalv1.Task](v) {
		if svc, ok := Get[*shoalv1.Service](v, tk.GetServiceId()); ok && tk.Spec != nil && tk.Spec == svc.GetSpec().GetTask() {
			fmt.Fprintf(&b, " %s", tk.GetMeta().GetId())
		}
	}
	return b.String() + "\n"
}

// randomTaskEntry builds entry index from r: 1-4 ops on services and tasks
// with one of two task specs and spec versions, a quarter of the task ops
// TASK_STATUS, an eighth TASK_ASSIGN and a quarter TASK_CREATE.
func randomTaskEntry(t testing.TB, rng *rand.Rand, r Reader, index uint64) *raft.Log {
	version := func(kind Kind, id string) uint64 { return randomVersion(rng, r, kind, id, index, 8) }
	spec := func() *shoalv1.TaskSpec {
		return &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: fmt.Sprintf("img:%d", rng.IntN(2))}}
	}
	var ops []*shoalv1.StoreOp
	for range 1 + rng.IntN(4) {
		if rng.IntN(3) == 0 {
			svc := mkService(fmt.Sprintf("s%d", rng.IntN(3)), fmt.Sprintf("name%d", rng.IntN(4)))
			svc.Spec.Task = spec()
			svc.SpecVersion = uint64(rng.IntN(2))
			id := svc.Meta.Id
			switch k := rng.IntN(10); {
			case k < 3 && r.Get(KindService, id) == nil || k == 0:
				ops = append(ops, opCreate(svc))
			case k < 9:
				ops = append(ops, opUpdate(svc, version(KindService, id)))
			default:
				ops = append(ops, opDelete(KindService, id, version(KindService, id)))
			}
			continue
		}
		id := fmt.Sprintf("t%d", rng.IntN(6))
		states := []shoalv1.TaskState{shoalv1.TaskState_TASK_STATE_PENDING, shoalv1.TaskState_TASK_STATE_ASSIGNED, shoalv1.TaskState_TASK_STATE_RUNNING}
		st := &shoalv1.TaskStatus{State: states[rng.IntN(3)], Message: fmt.Sprint("at ", index)}
		switch k := rng.IntN(16); {
		case k < 4:
			op := statusOp(id, version(KindTask, id), st)
			if rng.IntN(8) == 0 {
				op.Object.GetTask().NodeId = "forged"
			}
			ops = append(ops, op)
		case k >= 11 && k < 13 && r.Get(KindTask, id) != nil:
			// TASK_ASSIGN: valid, stale, without a version, or forged.
			op := assignOp(id, version(KindTask, id), fmt.Sprintf("n%d", rng.IntN(3)), st)
			if rng.IntN(8) == 0 {
				op.Object.GetTask().Slot = 9
			}
			ops = append(ops, op)
		case k >= 11 && r.Get(KindTask, id) == nil || k == 15:
			// TASK_CREATE against a service that may be missing or at
			// another spec version; now and then carrying a spec.
			tk := mkTask(id, fmt.Sprintf("s%d", rng.IntN(3)), "", 0, st.State)
			tk.SpecVersion = uint64(rng.IntN(2))
			if svc, ok := Get[*shoalv1.Service](r, tk.ServiceId); ok && rng.IntN(4) != 0 {
				tk.SpecVersion = svc.GetSpecVersion()
			}
			op := createOp(tk)
			if rng.IntN(8) == 0 {
				op.Object.GetTask().Spec = spec()
			}
			ops = append(ops, op)
		case k >= 11:
			ops = append(ops, opDelete(KindTask, id, version(KindTask, id))) // room for a create
		case k < 6 && r.Get(KindTask, id) == nil || k == 4:
			tk := mkTask(id, fmt.Sprintf("s%d", rng.IntN(3)), "n1", 0, st.State)
			tk.Spec = spec()
			ops = append(ops, opCreate(tk))
		case k < 10:
			tk := mkTask(id, fmt.Sprintf("s%d", rng.IntN(3)), "n1", 0, st.State)
			tk.Spec = spec()
			ops = append(ops, opUpdate(tk, version(KindTask, id)))
		default:
			ops = append(ops, opDelete(KindTask, id, version(KindTask, id)))
		}
	}
	return entry(t, index, ops...)
}

// randomVersion is the version an op on kind/id expects: 0 (no check) or a
// random older one, each one time in n, else the stored one (1 if none).
func randomVersion(rng *rand.Rand, r Reader, kind Kind, id string, index uint64, n int) uint64 {
	switch rng.IntN(n) {
	case 0:
		return 0
	case 1:
		return uint64(rng.IntN(int(index)))
	}
	if o := r.Get(kind, id); o != nil {
		return o.GetMeta().GetVersion()
	}
	return 1
}
