package raftstore

import (
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// tableModel is the tables' specification: a map per kind. What any read
// returns is computed from it by brute force.
type tableModel map[Kind]map[string]Object

func (m tableModel) clone() tableModel {
	out := tableModel{}
	for k, objs := range m {
		out[k] = maps.Clone(objs)
	}
	return out
}

// sorted returns the objects of kind that match, in id order.
func (m tableModel) sorted(kind Kind, match func(Object) bool) []string {
	var ids []string
	for id, o := range m[kind] {
		if match(o) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

func idsOf(objs []Object) []string {
	var ids []string
	for _, o := range objs {
		ids = append(ids, o.GetMeta().GetId())
	}
	return ids
}

// randomObject builds a fresh object of kind with id, its indexed fields
// drawn from small pools so that values collide, change and vanish.
func randomObject(r *rand.Rand, kind Kind, id string) Object {
	pick := func(pool ...string) string { return pool[r.Intn(len(pool))] }
	meta := &shoalv1.Meta{Id: id, Version: uint64(r.Intn(1000))}
	switch kind {
	case KindTask:
		return &shoalv1.Task{
			Meta:      meta,
			ServiceId: pick("", "s1", "s2", "s3", "s10"),
			NodeId:    pick("", "", "n1", "n2", "n2x"),
			Status:    &shoalv1.TaskStatus{State: shoalv1.TaskState(r.Intn(6))},
		}
	case KindNode:
		return &shoalv1.Node{
			Meta:        meta,
			Spec:        &shoalv1.NodeSpec{Name: pick("", "", "a", "b")},
			Description: &shoalv1.NodeDescription{Hostname: pick("", "h1", "a")},
		}
	default:
		return &shoalv1.Service{Meta: meta, Spec: &shoalv1.ServiceSpec{Name: pick("", "web", "db", "web2")}}
	}
}

// TestTablesMatchModel drives the tables with thousands of random inserts,
// replacements, deletes, commits and aborts, keeping read txns taken along
// the way, and checks every read (get, list, each index by value and in
// full, id prefixes, seeks) of the write txn, of the state just committed
// and of every kept view against the model at that moment.
func TestTablesMatchModel(t *testing.T) {
	for seed := int64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { tablesMatchModel(t, seed) })
	}
}

func tablesMatchModel(t *testing.T, seed int64) {
	r := rand.New(rand.NewSource(seed))
	kinds := []Kind{KindTask, KindNode, KindService}
	idPool := []string{"a", "ab", "abc", "b", "ba", "c", "d1", "d2", "d3", "e", "f"}
	values := map[string][]string{
		IndexServiceID: {"", "s1", "s2", "s3", "s10", "s"},
		IndexNodeID:    {"", "n1", "n2", "n2x", "n"},
		IndexState:     {"TASK_STATE_PENDING", "TASK_STATE_RUNNING", ""},
		IndexName:      {"", "a", "b", "h1", "web", "db", "web2", "we"},
	}
	db := newMemDB()
	committed := tableModel{}
	type kept struct {
		tx    *tableTxn
		model tableModel
	}
	var views []kept

	check := func(what string, tx *tableTxn, m tableModel) {
		t.Helper()
		v := &view{txn: tx}
		for _, kind := range kinds {
			def := tableDefs[kind]
			fail := func(read string, got, want []string) {
				t.Helper()
				if !slices.Equal(got, want) {
					t.Fatalf("seed %d, %s: %s %s: got %q, want %q", seed, what, kind, read, got, want)
				}
			}
			fail("list", idsOf(v.List(kind)), m.sorted(kind, func(Object) bool { return true }))
			for _, id := range idPool {
				var got []string
				if o := v.Get(kind, id); o != nil {
					got = []string{o.GetMeta().GetId()}
					if o != m[kind][id] {
						t.Fatalf("seed %d, %s: %s %q: another object than the one stored", seed, what, kind, id)
					}
				}
				fail("get "+id, got, m.sorted(kind, func(o Object) bool { return o.GetMeta().GetId() == id }))
				for _, prefix := range []string{id, id[:1], ""} {
					fail("prefix "+prefix, idsOf(v.withIDPrefix(kind, prefix)), m.sorted(kind, func(o Object) bool {
						return strings.HasPrefix(o.GetMeta().GetId(), prefix)
					}))
					var walked []string
					v.scan(kind, IndexID, prefix, id, func(o Object) bool { walked = append(walked, o.GetMeta().GetId()); return true })
					fail("scan prefix "+prefix+" after "+id, walked, m.sorted(kind, func(o Object) bool {
						oid := o.GetMeta().GetId()
						return strings.HasPrefix(oid, prefix) && oid > id
					}))
				}
			}
			for _, ix := range def.secondary {
				var full []string
				it, err := tx.Get(string(kind), ix.name)
				if err != nil {
					t.Fatal(err)
				}
				for o := it.Next(); o != nil; o = it.Next() {
					val, _ := ix.fn(o)
					full = append(full, val+"="+o.GetMeta().GetId())
				}
				var want []string
				for _, id := range m.sorted(kind, func(Object) bool { return true }) {
					if val, ok := ix.fn(m[kind][id]); ok {
						want = append(want, val+"="+id)
					}
				}
				slices.SortStableFunc(want, func(a, b string) int {
					av, aid, _ := strings.Cut(a, "=")
					bv, bid, _ := strings.Cut(b, "=")
					if c := strings.Compare(av, bv); c != 0 {
						return c
					}
					return strings.Compare(aid, bid)
				})
				fail("index "+ix.name, full, want)
				for _, val := range values[ix.name] {
					match := func(o Object) bool { got, ok := ix.fn(o); return ok && got == val }
					fail(ix.name+"="+val, idsOf(v.Find(kind, ix.name, val)), m.sorted(kind, match))
					after := idPool[r.Intn(len(idPool))]
					var walked []string
					v.scan(kind, ix.name, val, after, func(o Object) bool { walked = append(walked, o.GetMeta().GetId()); return true })
					fail(ix.name+"="+val+" after "+after, walked, m.sorted(kind, func(o Object) bool {
						return match(o) && o.GetMeta().GetId() > after
					}))
				}
			}
		}
	}

	for round := 0; round < 150; round++ {
		txn := db.Txn(true)
		work := committed.clone()
		for range 1 + r.Intn(25) {
			kind := kinds[r.Intn(len(kinds))]
			id := idPool[r.Intn(len(idPool))]
			if work[kind] == nil {
				work[kind] = map[string]Object{}
			}
			if r.Intn(4) == 0 {
				err := txn.Delete(string(kind), newObject(kind, id))
				if _, ok := work[kind][id]; ok != (err == nil) {
					t.Fatalf("seed %d: deleting %s %q: %v, stored %v", seed, kind, id, err, ok)
				}
				delete(work[kind], id)
				continue
			}
			o := randomObject(r, kind, id)
			if err := txn.Insert(string(kind), o); err != nil {
				t.Fatal(err)
			}
			work[kind][id] = o
		}
		check(fmt.Sprintf("round %d, inside the write txn", round), txn, work)
		if r.Intn(5) == 0 {
			txn.Abort()
		} else {
			txn.Commit()
			committed = work
		}
		check(fmt.Sprintf("round %d, committed", round), db.Txn(false), committed)
		if r.Intn(10) == 0 {
			views = append(views, kept{db.Txn(false), committed})
		}
	}
	for i, k := range views {
		check(fmt.Sprintf("kept view %d", i), k.tx, k.model)
	}
}

// BenchmarkTableTaskWrites is a task's life through the tables: 1,000
// tasks created in a txn, then assigned, then three status reports each,
// a txn per step, over a table of 100,000 tasks.
func BenchmarkTableTaskWrites(b *testing.B) {
	db := newMemDB()
	fill := db.Txn(true)
	for i := range 100_000 {
		id := fmt.Sprintf("x%024d", i)
		if err := fill.Insert(string(KindTask), &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, ServiceId: "s0", NodeId: "n1"}); err != nil {
			b.Fatal(err)
		}
	}
	fill.Commit()
	states := []shoalv1.TaskState{shoalv1.TaskState_TASK_STATE_PENDING, shoalv1.TaskState_TASK_STATE_ASSIGNED,
		shoalv1.TaskState_TASK_STATE_ACCEPTED, shoalv1.TaskState_TASK_STATE_STARTING, shoalv1.TaskState_TASK_STATE_RUNNING}
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for s, st := range states {
			txn := db.Txn(true)
			for i := range 1000 {
				node := ""
				if s > 0 {
					node = fmt.Sprintf("n%d", i%1000)
				}
				id := fmt.Sprintf("t%d-%024d", n, i*7919%1000)
				if err := txn.Insert(string(KindTask), &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, ServiceId: "s1", NodeId: node, Status: &shoalv1.TaskStatus{State: st}}); err != nil {
					b.Fatal(err)
				}
			}
			txn.Commit()
		}
	}
}

// TestTablesReadWhileWritten: readers walk views taken at any moment while
// one goroutine writes and commits (run with -race: btree's contract is
// that a tree may be read while it is cloned and its clone written). Each
// view holds exactly one commit: its tasks all carry that commit's number.
func TestTablesReadWhileWritten(t *testing.T) {
	db := newMemDB()
	const rounds, tasks = 200, 64
	done := make(chan struct{})
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				v := &view{txn: db.Txn(false)}
				all := v.List(KindTask)
				if len(all) == 0 {
					continue
				}
				want := all[0].(*shoalv1.Task).GetServiceId()
				if len(all) != tasks || len(v.Find(KindTask, IndexServiceID, want)) != tasks {
					errs <- fmt.Errorf("a view holds %d tasks, %d of service %q; want %d of one commit", len(all), len(v.Find(KindTask, IndexServiceID, want)), want, tasks)
					return
				}
			}
		}()
	}
	for round := range rounds {
		txn := db.Txn(true)
		for i := range tasks {
			o := &shoalv1.Task{Meta: &shoalv1.Meta{Id: fmt.Sprintf("t%03d", i)}, ServiceId: fmt.Sprintf("round%d", round)}
			if err := txn.Insert(string(KindTask), o); err != nil {
				t.Fatal(err)
			}
		}
		txn.Commit()
	}
	close(done)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkTableGet: a lookup by id among 100,000 tasks with real
// (random) ids, the tables' most frequent read (readers' Get, the FSM's
// version check, index walks resolving keys).
func BenchmarkTableGet(b *testing.B) {
	db := newMemDB()
	txn := db.Txn(true)
	ids := make([]string, 100_000)
	for i := range ids {
		ids[i] = NewID()
		if err := txn.Insert(string(KindTask), &shoalv1.Task{Meta: &shoalv1.Meta{Id: ids[i]}}); err != nil {
			b.Fatal(err)
		}
	}
	txn.Commit()
	v := db.Txn(false)
	b.ResetTimer()
	for i := range b.N {
		if v.get(KindTask, ids[i*7919%len(ids)]) == nil {
			b.Fatal("missing")
		}
	}
}
