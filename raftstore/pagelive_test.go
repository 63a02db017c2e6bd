package raftstore

import (
	"fmt"
	"math/rand"
	"slices"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Paging through a store that is written between pages (a fresh view per
// page, as a client paging with tokens sees it), over tables three levels
// deep and with page sizes around a node's (63 keys): ids come in strictly
// increasing order, every object of a page is in the range at that page's
// view, and every object in the range from the first page to the last
// (never deleted, never moved out) comes exactly once.
func TestPageLiveTablesDeep(t *testing.T) {
	r := rand.New(rand.NewSource(9))
	db := newMemDB()
	write := func(n int) {
		txn := db.Txn(true)
		for range n {
			id := fmt.Sprintf("t%05d", r.Intn(8000))
			if r.Intn(4) == 0 {
				_ = txn.Delete(string(KindTask), newObject(KindTask, id)) // may not exist
				continue
			}
			st := shoalv1.TaskState_TASK_STATE_RUNNING
			if r.Intn(2) == 0 {
				st = shoalv1.TaskState_TASK_STATE_PENDING
			}
			if err := txn.Insert(string(KindTask), mkTask(id, fmt.Sprintf("s%d", r.Intn(3)), "", 0, st)); err != nil {
				t.Fatal(err)
			}
		}
		txn.Commit()
	}
	write(12000)
	ranges := []struct{ index, value string }{
		{IndexID, ""}, {IndexID, "t0"}, {IndexServiceID, "s1"}, {IndexState, "TASK_STATE_PENDING"},
	}
	for _, rg := range ranges {
		for _, n := range []int{13, 62, 63, 64, 127, 500} {
			in := func(v *view) map[string]bool {
				m := map[string]bool{}
				for _, o := range refRange[*shoalv1.Task](v, rg.index, rg.value, "", nil) {
					m[o.GetMeta().GetId()] = true
				}
				return m
			}
			// stayed: in the range at the first view and at every view since.
			first := &view{txn: db.Txn(false)}
			stayed := in(first)
			seen := map[string]bool{}
			after := ""
			for pages := 0; ; pages++ {
				if pages > 20000 {
					t.Fatalf("%s=%q n=%d: paging does not end", rg.index, rg.value, n)
				}
				v := &view{txn: db.Txn(false)}
				now := in(v)
				for id := range stayed {
					if !now[id] {
						delete(stayed, id)
					}
				}
				page, more := Page[*shoalv1.Task](v, rg.index, rg.value, after, n, nil)
				for _, tk := range page {
					id := tk.GetMeta().GetId()
					if id <= after || seen[id] || !now[id] {
						t.Fatalf("%s=%q n=%d: %q after %q (seen %v, in range %v)", rg.index, rg.value, n, id, after, seen[id], now[id])
					}
					seen[id] = true
					after = id
				}
				if !more {
					break
				}
				if len(page) != n {
					t.Fatalf("%s=%q n=%d: a short page (%d) with more", rg.index, rg.value, n, len(page))
				}
				write(1 + r.Intn(40))
			}
			var missed []string
			for id := range stayed {
				if !seen[id] {
					missed = append(missed, id)
				}
			}
			slices.Sort(missed)
			if len(missed) > 0 {
				t.Fatalf("%s=%q n=%d: %d objects in the range throughout never paged: %v", rg.index, rg.value, n, len(missed), missed[:min(5, len(missed))])
			}
		}
	}
}
