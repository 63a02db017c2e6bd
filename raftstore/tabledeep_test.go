package raftstore

import (
	"fmt"
	"math/rand"
	"slices"
	"sync"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestTablesDeepTreesKeepViews is TestTablesMatchModel at the size where
// copy-on-write matters: up to 12,000 tasks, so the trees are three levels
// deep and writes split and merge shared nodes (the small test's tables
// never leave one leaf). Each round writes hundreds to thousands of random
// inserts, replacements and deletes, then commits or aborts; views are
// kept along the way and read by other goroutines while later rounds
// write (run with -race), and every view must still read exactly the
// state of its commit: each object (the very one stored), the id order,
// and every secondary index's keys.
func TestTablesDeepTreesKeepViews(t *testing.T) {
	const ids = 12000
	r := rand.New(rand.NewSource(5))
	db := newMemDB()
	committed := map[string]Object{}
	type kept struct {
		tx    *tableTxn
		model map[string]Object
	}
	var (
		mu    sync.Mutex
		views []kept
		wg    sync.WaitGroup
		errs  = make(chan error, 64)
		stop  = make(chan struct{})
	)
	check := func(tx *tableTxn, m map[string]Object) error {
		v := &view{txn: tx}
		want := slices.Sorted(func(yield func(string) bool) {
			for id := range m {
				if !yield(id) {
					return
				}
			}
		})
		all := v.List(KindTask)
		if len(all) != len(want) {
			return fmt.Errorf("%d tasks, want %d", len(all), len(want))
		}
		for i, o := range all {
			if id := o.GetMeta().GetId(); id != want[i] || o != m[id] {
				return fmt.Errorf("task %d: %q, want %q (or another object than the one stored)", i, id, want[i])
			}
		}
		for _, ix := range tableDefs[KindTask].secondary {
			var wantKeys, gotKeys []string
			for _, id := range want {
				if val, ok := ix.fn(m[id]); ok {
					wantKeys = append(wantKeys, val+"\x00"+id)
				}
			}
			slices.Sort(wantKeys)
			it, err := tx.Get(string(KindTask), ix.name)
			if err != nil {
				return err
			}
			for o := it.Next(); o != nil; o = it.Next() {
				val, ok := ix.fn(o)
				if !ok {
					return fmt.Errorf("index %s holds %q, which is not in it", ix.name, o.GetMeta().GetId())
				}
				gotKeys = append(gotKeys, val+"\x00"+o.GetMeta().GetId())
			}
			if !slices.Equal(gotKeys, wantKeys) {
				return fmt.Errorf("index %s: %d keys, want %d", ix.name, len(gotKeys), len(wantKeys))
			}
		}
		return nil
	}
	// Readers re-check the kept views while the writer goes on.
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				vs := slices.Clone(views)
				mu.Unlock()
				for i, k := range vs {
					if err := check(k.tx, k.model); err != nil {
						errs <- fmt.Errorf("kept view %d, read concurrently: %w", i, err)
						return
					}
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()

	task := func(id string) *shoalv1.Task {
		st := shoalv1.TaskState(r.Intn(6))
		node := fmt.Sprintf("n%02d", r.Intn(40))
		if r.Intn(3) == 0 {
			node = ""
		}
		return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, ServiceId: fmt.Sprintf("s%02d", r.Intn(30)), NodeId: node, Status: &shoalv1.TaskStatus{State: st}}
	}
	for round := 0; round < 40; round++ {
		txn := db.Txn(true)
		work := make(map[string]Object, len(committed))
		for id, o := range committed {
			work[id] = o
		}
		// Early rounds grow the tables, later ones mostly delete, so that
		// nodes split and then merge.
		grow := round < 15
		for range 200 + r.Intn(3000) {
			id := fmt.Sprintf("t%05d", r.Intn(ids))
			if !grow && r.Intn(3) > 0 || grow && r.Intn(6) == 0 {
				err := txn.Delete(string(KindTask), newObject(KindTask, id))
				if _, ok := work[id]; ok != (err == nil) {
					t.Fatalf("round %d: deleting %q: %v, stored %v", round, id, err, ok)
				}
				delete(work, id)
				continue
			}
			o := task(id)
			if err := txn.Insert(string(KindTask), o); err != nil {
				t.Fatal(err)
			}
			work[id] = o
		}
		if err := check(txn, work); err != nil {
			t.Fatalf("round %d, inside the write txn: %v", round, err)
		}
		if r.Intn(4) == 0 {
			txn.Abort()
		} else {
			txn.Commit()
			committed = work
		}
		if err := check(db.Txn(false), committed); err != nil {
			t.Fatalf("round %d, committed: %v", round, err)
		}
		if r.Intn(3) == 0 {
			mu.Lock()
			views = append(views, kept{db.Txn(false), committed})
			mu.Unlock()
		}
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
	}
	for i, k := range views {
		if err := check(k.tx, k.model); err != nil {
			t.Fatalf("kept view %d, at the end: %v", i, err)
		}
	}
	if len(views) < 5 {
		t.Fatalf("only %d views kept: the test should keep more", len(views))
	}
}
