package raftstore

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// viewState renders what a reader of v can tell apart: its index, every
// object, and every index's keys in order.
func viewState(t testing.TB, v *view) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "index %d\n", v.index)
	b.WriteString(dump(v))
	for _, kind := range Kinds {
		for _, name := range slices.Sorted(maps.Keys(tableDefs[kind].indexes)) {
			it, err := v.txn.Get(string(kind), name)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s/%s:", kind, name)
			for o := it.Next(); o != nil; o = it.Next() {
				val, _ := tableDefs[kind].indexes[name](o)
				fmt.Fprintf(&b, " %s=%s", val, o.GetMeta().GetId())
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// Whole entries (failing ones anywhere in a batch, with transactions of
// random size) applied in batches, with views and snapshots taken between
// batches: every view, read after all the later batches, still reads the
// state the entries applied one by one had at its index, and every
// snapshot, persisted only after later batches and restored into a fresh
// FSM, restores exactly that state too (objects, index keys, applied
// index, old-manager count).
func TestBatchViewsAndSnapshotsMatchOneByOne(t *testing.T) {
	gens := []func(testing.TB, *rand.Rand, Reader, uint64) *raft.Log{randomEntry, randomTaskEntry}
	for seed := uint64(1); seed <= 12; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 13))
			gen := gens[seed%2]
			ref := newFSM(slog.New(slog.DiscardHandler), newHub(1<<12))
			var logs []*raft.Log
			want := map[uint64]string{0: viewState(t, ref.view())}
			wantFull := map[uint64]string{0: stateOf(t, ref)}
			for index := uint64(1); index <= 250; index++ {
				l := gen(t, rng, ref.view(), index)
				logs = append(logs, l)
				applyOneByOne(ref, []*raft.Log{l})
				want[index], wantFull[index] = viewState(t, ref.view()), stateOf(t, ref)
			}

			f := newFSM(slog.New(slog.DiscardHandler), newHub(1<<12))
			f.txnOps = []int{0, 1, 2, 5, 17}[rng.IntN(5)]
			var views []*view
			var snaps []raft.FSMSnapshot
			for at := 0; at < len(logs); {
				n := min(1+rng.IntN(32), len(logs)-at)
				f.ApplyBatch(logs[at : at+n])
				at += n
				views = append(views, f.view())
				s, err := f.Snapshot()
				if err != nil {
					t.Fatal(err)
				}
				snaps = append(snaps, s)
			}
			for i, v := range views {
				if got := viewState(t, v); got != want[v.index] {
					t.Fatalf("view %d at index %d, read after later batches:\n%s", i, v.index, firstDiff(got, want[v.index]))
				}
			}
			for i, s := range snaps {
				var sink memSink
				if err := s.Persist(&sink); err != nil {
					t.Fatal(err)
				}
				g := newFSM(slog.New(slog.DiscardHandler), newHub(1<<12))
				if err := g.Restore(readCloser{bytes.NewReader(sink.Bytes())}); err != nil {
					t.Fatal(err)
				}
				index := g.appliedIndex()
				if got := stateOf(t, g); got != wantFull[index] {
					t.Fatalf("snapshot %d at index %d, restored:\n%s", i, index, firstDiff(got, wantFull[index]))
				}
			}
		})
	}
}
