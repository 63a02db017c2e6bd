package raftstore

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// testView is a view over a fresh memdb holding objs, without raft.
func testView(t testing.TB, objs ...Object) *view {
	db := newMemDB()
	txn := db.Txn(true)
	for _, o := range objs {
		if err := txn.Insert(string(KindOf(o)), o); err != nil {
			t.Fatal(err)
		}
	}
	txn.Commit()
	return &view{txn: db.Txn(false)}
}

// sliceReader hides the scanner of a Reader: Page and Count then take the
// fallback through Find and List.
type sliceReader struct{ Reader }

// refRange is what a Page walk must return, computed the way the list
// handlers did before Page: build the range with Find or List, filter it,
// keep what sorts after after.
func refRange[T Object](r Reader, index, value, after string, keep func(T) bool) []T {
	var all []T
	if index == IndexID {
		for _, o := range List[T](r) {
			if strings.HasPrefix(o.GetMeta().GetId(), value) {
				all = append(all, o)
			}
		}
	} else {
		all = Find[T](r, index, value)
	}
	var out []T
	for _, o := range all {
		if o.GetMeta().GetId() > after && (keep == nil || keep(o)) {
			out = append(out, o)
		}
	}
	return out
}

func pageTasks() []Object {
	var objs []Object
	states := []shoalv1.TaskState{shoalv1.TaskState_TASK_STATE_PENDING, shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_FAILED}
	for i := range 40 {
		// Ids of different lengths and first letters, out of insertion
		// order, so that id order is not insertion order and "t1" < "t10".
		id := fmt.Sprintf("%c%d", "tsu"[i%3], (i*7)%40)
		objs = append(objs, mkTask(id, fmt.Sprintf("svc%d", i%4), fmt.Sprintf("node%d", i%3),
			states[i%2], states[i%3]))
	}
	objs = append(objs, mkTask("x-unassigned", "svc1", "", states[0], states[0]))
	return objs
}

// TestPageMatchesFind: for every range and filter, walking Page after Page
// (each page's last id the next after) returns exactly the old
// collect-filter-cut pages, ends with more=false, and Count is the range's
// size; on a store view and through the Find/List fallback alike.
func TestPageMatchesFind(t *testing.T) {
	v := testView(t, pageTasks()...)
	running := func(t *shoalv1.Task) bool { return t.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_RUNNING }
	onNode1 := func(t *shoalv1.Task) bool { return t.GetNodeId() == "node1" }
	for _, rc := range []struct {
		name         string
		index, value string
		keep         func(*shoalv1.Task) bool
	}{
		{"all", IndexID, "", nil},
		{"all, empty index name", "", "", nil},
		{"id prefix t", IndexID, "t", nil},
		{"id prefix t1", IndexID, "t1", nil},
		{"id prefix matching nothing", IndexID, "zz", nil},
		{"all, running", IndexID, "", running},
		{"service", IndexServiceID, "svc1", nil},
		{"service and node", IndexServiceID, "svc1", onNode1},
		{"unassigned", IndexNodeID, "", nil},
		{"node", IndexNodeID, "node2", nil},
		{"node, running", IndexNodeID, "node2", running},
		{"state", IndexState, "TASK_STATE_PENDING", nil},
		{"state not indexed", IndexState, "TASK_STATE_FAILED", nil}, // only PENDING is in the state index
		{"pending on node1", IndexState, "TASK_STATE_PENDING", onNode1},
		{"service absent", IndexServiceID, "svc9", nil},
		{"keep refuses all", IndexID, "", func(*shoalv1.Task) bool { return false }},
		{"unknown index", "nope", "x", nil},
	} {
		for _, r := range []struct {
			name string
			r    Reader
		}{{"view", v}, {"fallback", sliceReader{v}}} {
			for _, n := range []int{1, 2, 3, 7, 100} {
				t.Run(fmt.Sprintf("%s/%s/n=%d", rc.name, r.name, n), func(t *testing.T) {
					idx := rc.index
					if idx == "" {
						idx = IndexID
					}
					want := ids(refRange(r.r, idx, rc.value, "", rc.keep))
					if rc.index == "nope" {
						want = []string{}
					}
					var got []string
					after := ""
					for step := 0; ; step++ {
						page, more := Page(r.r, rc.index, rc.value, after, n, rc.keep)
						wantPage := want[len(got):min(len(got)+n, len(want))]
						if !slices.Equal(ids(page), wantPage) {
							t.Fatalf("page %d after %q: %v, want %v", step, after, ids(page), wantPage)
						}
						got = append(got, ids(page)...)
						if more != (len(got) < len(want)) {
							t.Fatalf("page %d: more=%v with %d of %d returned", step, more, len(got), len(want))
						}
						if !more {
							break
						}
						after = page[len(page)-1].GetMeta().GetId()
					}
					if c := Count(r.r, rc.index, rc.value, rc.keep); c != len(want) {
						t.Fatalf("Count = %d, want %d", c, len(want))
					}
					size := len(refRange[*shoalv1.Task](r.r, idx, rc.value, "", nil))
					if rc.index == "nope" {
						size = 0
					}
					if c, ok := CountAtMost(r.r, rc.index, rc.value, rc.keep, size); !ok || c != len(want) {
						t.Fatalf("CountAtMost(range size %d) = %d, %v; want %d, true", size, c, ok, len(want))
					}
					if size > 0 {
						if _, ok := CountAtMost(r.r, rc.index, rc.value, rc.keep, size-1); ok {
							t.Fatalf("CountAtMost(%d) of a range of %d is complete", size-1, size)
						}
					}
				})
			}
		}
	}
}

// TestPageAcrossChanges: a page's last id stays a valid place to resume
// from in a later view where it was deleted and objects were created on
// both sides of it: the next page holds exactly the objects now after it.
func TestPageAcrossChanges(t *testing.T) {
	objs := pageTasks()
	v1 := testView(t, objs...)
	first, more := Page[*shoalv1.Task](v1, IndexServiceID, "svc1", "", 3, nil)
	if len(first) != 3 || !more {
		t.Fatalf("first page %v more=%v", ids(first), more)
	}
	last := first[2].GetMeta().GetId()
	var changed []Object
	for _, o := range objs {
		if o.GetMeta().GetId() != last {
			changed = append(changed, o)
		}
	}
	changed = append(changed,
		mkTask(last+"0", "svc1", "", 0, 0),                       // just after the token
		mkTask(first[0].GetMeta().GetId()+"0", "svc1", "", 0, 0), // before it: not on later pages
		mkTask("a", "svc1", "", 0, 0),
		mkTask("zzz", "svc1", "", 0, 0))
	v2 := testView(t, changed...)
	want := ids(refRange[*shoalv1.Task](v2, IndexServiceID, "svc1", last, nil))
	var got []string
	for after := last; ; {
		page, more := Page[*shoalv1.Task](v2, IndexServiceID, "svc1", after, 2, nil)
		got = append(got, ids(page)...)
		if !more {
			break
		}
		after = page[len(page)-1].GetMeta().GetId()
	}
	if !slices.Equal(got, want) || !slices.Contains(got, last+"0") || !slices.Contains(got, "zzz") || slices.Contains(got, "a") {
		t.Fatalf("after the changes: %v, want %v", got, want)
	}
}

// TestPageEdges: an empty table, a page ending the range exactly, n=0, and
// hostile after values (NUL bytes, 0xff, past the end, longer than any id)
// give well-defined pages: never an object at or before after, never one
// out of the range.
func TestPageEdges(t *testing.T) {
	empty := testView(t)
	if p, more := Page[*shoalv1.Task](empty, IndexID, "", "", 10, nil); len(p) != 0 || more {
		t.Fatalf("empty: %v %v", ids(p), more)
	}
	if c := Count[*shoalv1.Task](empty, IndexServiceID, "s", nil); c != 0 {
		t.Fatalf("empty count %d", c)
	}
	v := testView(t, mkTask("a", "s", "", 0, 0), mkTask("b", "s", "", 0, 0), mkTask("c", "s2", "", 0, 0),
		mkNode("n1", "", "host"), mkService("s1", "web"))
	if p, more := Page[*shoalv1.Task](v, IndexServiceID, "s", "", 2, nil); !slices.Equal(ids(p), []string{"a", "b"}) || more {
		t.Fatalf("exact last page: %v more=%v", ids(p), more)
	}
	if p, more := Page[*shoalv1.Task](v, IndexID, "", "", 0, nil); len(p) != 0 || !more {
		t.Fatalf("n=0: %v more=%v", ids(p), more)
	}
	if p, _ := Page[*shoalv1.Node](v, IndexName, "host", "", 5, nil); !slices.Equal(ids(p), []string{"n1"}) {
		t.Fatalf("node by hostname: %v", ids(p))
	}
	if p, _ := Page[*shoalv1.Service](v, IndexID, "", "", 5, nil); !slices.Equal(ids(p), []string{"s1"}) {
		t.Fatalf("services: %v", ids(p))
	}
	for _, tc := range []struct {
		index, value, after string
		want                []string
	}{
		{IndexID, "", "\x00", []string{"a", "b", "c"}},
		{IndexID, "", "a\x00", []string{"b", "c"}},
		{IndexID, "", "a\x00zzzz", []string{"b", "c"}},
		{IndexID, "", "\xff", nil},
		{IndexID, "", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", nil},
		{IndexID, "b", "a", []string{"b"}},
		{IndexID, "b", "c", nil},
		{IndexServiceID, "s", "\x00", []string{"a", "b"}},
		{IndexServiceID, "s", "a\x00\x00", []string{"b"}},
		{IndexServiceID, "s", "\xff\xff", nil},
		{IndexServiceID, "s\x00b", "", nil},
		{IndexServiceID, "s", strings.Repeat("a", 1<<16), []string{"b"}},
	} {
		for _, r := range []Reader{v, sliceReader{v}} {
			p, more := Page[*shoalv1.Task](r, tc.index, tc.value, tc.after, 10, nil)
			if !slices.Equal(ids(p), tc.want) && len(p)+len(tc.want) > 0 || more {
				t.Errorf("%T %s=%q after %q: %v more=%v, want %v", r, tc.index, tc.value, tc.after, ids(p), more, tc.want)
			}
		}
	}
}

// TestPageWriteTx: in a WriteTx, Page and Count see the tx's own writes
// (created, updated out of the range, deleted), and seek in the base view
// for kinds the tx has not touched.
func TestPageWriteTx(t *testing.T) {
	v := testView(t, mkTask("a", "s", "", 0, 0), mkTask("b", "s", "", 0, 0), mkTask("c", "s", "", 0, 0), mkService("s", "web"))
	tx := newWriteTx(v)
	if err := tx.Create(mkTask("bb", "s", "", 0, 0)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Delete(KindTask, "c", 0); err != nil {
		t.Fatal(err)
	}
	moved := mkTask("a", "other", "", 0, 0)
	if err := tx.Update(moved); err != nil {
		t.Fatal(err)
	}
	p, more := Page[*shoalv1.Task](tx, IndexServiceID, "s", "", 5, nil)
	if !slices.Equal(ids(p), []string{"b", "bb"}) || more {
		t.Fatalf("tx page %v more=%v", ids(p), more)
	}
	if c := Count[*shoalv1.Task](tx, IndexID, "", nil); c != 3 {
		t.Fatalf("tx count %d", c)
	}
	if p, _ := Page[*shoalv1.Service](tx, IndexID, "", "", 5, nil); !slices.Equal(ids(p), []string{"s"}) {
		t.Fatalf("untouched kind: %v", ids(p))
	}
}

// BenchmarkListPage: one page of 1,000 from 100,000 tasks, the middle page
// of a walk, the way the list handlers cut it before Page (collect the whole
// table, filter, binary-search the token, cut) and with Page (seek, visit
// the page); Count is what the reply's total costs on top.
func BenchmarkListPage(b *testing.B) {
	const total, size = 100_000, 1000
	objs := make([]Object, 0, total)
	for i := range total {
		objs = append(objs, mkTask(NewID(), fmt.Sprintf("svc%d", i%10), fmt.Sprintf("node%d", i%1000),
			shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_RUNNING))
	}
	v := testView(b, objs...)
	all := List[*shoalv1.Task](v)
	after := all[total/2].GetMeta().GetId()
	keepAll := func(*shoalv1.Task) bool { return true }
	b.Run("collect", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var items []*shoalv1.Task
			for _, t := range List[*shoalv1.Task](v) {
				if keepAll(t) {
					items = append(items, t)
				}
			}
			start, _ := slices.BinarySearchFunc(items, after, func(t *shoalv1.Task, s string) int { return strings.Compare(t.GetMeta().GetId(), s) })
			if len(items[start+1:start+1+size]) != size {
				b.Fatal("short page")
			}
		}
	})
	b.Run("seek", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if p, more := Page(v, IndexID, "", after, size, keepAll); len(p) != size || !more {
				b.Fatal("short page")
			}
		}
	})
	b.Run("count", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if Count(v, IndexID, "", keepAll) != total {
				b.Fatal("wrong count")
			}
		}
	})
	b.Run("seek-service", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if p, _ := Page(v, IndexServiceID, "svc3", after, size, keepAll); len(p) != size {
				b.Fatal("short page")
			}
		}
	})
}

// TestPageBounded: a walk bounded to a number of visits per call calls
// keep at most that often, may return short or empty pages with more set,
// and, resumed from last, yields every kept object once, in id order, as
// the unbounded walk does.
func TestPageBounded(t *testing.T) {
	var objs []Object
	for i := range 100 {
		objs = append(objs, &shoalv1.Task{Meta: &shoalv1.Meta{Id: fmt.Sprintf("t%03d", i)}, ServiceId: "s"})
	}
	v := testView(t, objs...)
	for _, r := range []Reader{v, sliceReader{v}} {
		for _, index := range []string{IndexID, IndexServiceID} {
			value := ""
			if index == IndexServiceID {
				value = "s"
			}
			calls := 0
			keep := func(t *shoalv1.Task) bool {
				calls++
				var n int
				fmt.Sscanf(t.GetMeta().GetId(), "t%d", &n)
				return n%30 == 7
			}
			want := refRange(r, index, value, "", keep)
			var got []*shoalv1.Task
			after, rounds := "", 0
			for {
				calls = 0
				page, more, last := PageBounded(r, index, value, after, 2, keep, 10)
				if calls > 10 {
					t.Fatalf("%s: one call ran keep %d times, bound 10", index, calls)
				}
				got = append(got, page...)
				rounds++
				if !more {
					if last != "" {
						t.Fatalf("%s: last %q on the last page", index, last)
					}
					break
				}
				if last <= after {
					t.Fatalf("%s: no progress: last %q after %q", index, last, after)
				}
				after = last
			}
			if !slices.Equal(ids(got), ids(want)) || len(want) != 4 {
				t.Fatalf("%s: bounded walk %v, want %v", index, ids(got), ids(want))
			}
			if rounds < 10 {
				t.Fatalf("%s: %d calls for 100 objects at 10 visits each", index, rounds)
			}
			// Unbounded (0) is Page.
			p1, m1 := Page(r, index, value, "", 3, keep)
			p2, m2, _ := PageBounded(r, index, value, "", 3, keep, 0)
			if !slices.Equal(ids(p1), ids(p2)) || m1 != m2 {
				t.Fatalf("%s: PageBounded(0) %v %v, Page %v %v", index, ids(p2), m2, ids(p1), m1)
			}
		}
	}
}
