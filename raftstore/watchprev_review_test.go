package raftstore

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestWatchPrevChainsUnderBatches: whatever entries raft hands the FSM
// (one by one or in batches of any size and transaction size, entries
// failing in the middle of a batch and undone, several ops on one service
// in one entry, services deleted and re-created under the same id), every
// event a WatchNode filter is given carries as prev exactly the object
// the previous event of the same object left in the store (its very
// fields, less its previous_spec: replaced) for an update of a service,
// the very object for an update of a task, and nil for every other event; live and in a replay from the ring. A
// filter that skips an update equal to its prev in what it reads is then
// exact: the chain of prevs is the chain of stored versions, none missed,
// none from an undone entry.
func TestWatchPrevChainsUnderBatches(t *testing.T) {
	prevChainsUnderBatches(t, 40, 11, serviceEntry, "service updates", 20, func(_ []ringEntry, serviceUpdates int) int { return serviceUpdates })
}

// prevChainsUnderBatches runs a prev-chain test: for each of seeds seeds
// (PCG stream stream), 300 entries of gen applied one by one and, to
// another store, in random batches of random transaction sizes; every
// event's prev checked (checkPrevChain) in both rings, as the filter of a
// live node subscription was given it, and in a late subscription's
// replay. updates counts, in a ring, the updates the generator must
// exercise (at least least of them, named what).
func prevChainsUnderBatches(t *testing.T, seeds, stream uint64, gen func(testing.TB, *rand.Rand, Reader, uint64) *raft.Log, what string, least int, updates func(ring []ringEntry, serviceUpdates int) int) {
	for seed := uint64(1); seed <= seeds; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, stream))
			ref := newFSM(slog.New(slog.DiscardHandler), newHub(1<<16))
			// A node session: without one the FSM keeps no prev (wantsPrev).
			refSub, err := ref.hub.watchNode(context.Background(), 0, "n0", nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer refSub.Close()
			var logs []*raft.Log
			for index := uint64(1); index <= 300; index++ {
				l := gen(t, rng, ref.view(), index)
				logs = append(logs, l)
				applyOneByOne(ref, []*raft.Log{l})
			}
			f := newFSM(slog.New(slog.DiscardHandler), newHub(1<<16))
			f.txnOps = []int{0, 1, 2, 5, 17}[rng.IntN(5)]
			type given struct {
				ev   *shoalv1.WatchEvent
				prev Object
			}
			var seen []given // appended under the hub's lock
			sub, err := f.hub.watchNode(context.Background(), 0, "n0", nil, func(ev *shoalv1.WatchEvent, prev Object) bool {
				seen = append(seen, given{ev, prev})
				return true
			})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			for at := 0; at < len(logs); {
				n := min(1+rng.IntN(64), len(logs)-at)
				f.ApplyBatch(logs[at : at+n])
				at += n
			}
			for name, fs := range map[string]*fsm{"one by one": ref, "batched": f} {
				fs.hub.mu.Lock()
				ring := append([]ringEntry(nil), fs.hub.ring...)
				fs.hub.mu.Unlock()
				n := checkPrevChain(t, name, len(ring), func(i int) (*shoalv1.WatchEvent, Object) { return ring[i].ev, ring[i].prev })
				if got := updates(ring, n); got < least {
					t.Fatalf("%s: %d %s: the generator should exercise them", name, got, what)
				}
			}
			// A subscription opened afterwards is given the same in the
			// ring's replay.
			var replayed []given
			late, err := f.hub.watchNode(context.Background(), 1, "n0", nil, func(ev *shoalv1.WatchEvent, prev Object) bool {
				replayed = append(replayed, given{ev, prev})
				return true
			})
			if err != nil {
				t.Fatal(err)
			}
			defer late.Close()
			f.hub.mu.Lock()
			defer f.hub.mu.Unlock()
			checkPrevChain(t, "the filter", len(seen), func(i int) (*shoalv1.WatchEvent, Object) { return seen[i].ev, seen[i].prev })
			checkPrevChain(t, "the replay", len(replayed), func(i int) (*shoalv1.WatchEvent, Object) { return replayed[i].ev, replayed[i].prev })
			if len(replayed) != len(seen) {
				t.Fatalf("the replay gave the filter %d events, the live subscription %d", len(replayed), len(seen))
			}
		})
	}
}

// checkPrevChain walks n events in order from an empty store and checks
// each one's prev; it returns how many service updates it saw.
func checkPrevChain(t *testing.T, name string, n int, at func(int) (*shoalv1.WatchEvent, Object)) int {
	t.Helper()
	stored := map[objKey]Object{}
	updates := 0
	for i := range n {
		ev, prev := at(i)
		o := Unwrap(ev.GetObject())
		k := objKey{KindOf(o), o.GetMeta().GetId()}
		update := ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_UPDATE
		if k.kind == KindService && update {
			updates++
			if !replaced(prev, stored[k]) {
				t.Fatalf("%s: event %d (%s at %d): prev %s, want the stored %s", name, i, k.id, ev.GetIndex(), versionOf(prev), versionOf(stored[k]))
			}
		} else if (k.kind == KindTask || k.kind == KindNode) && update {
			// A task or a node is kept as it was stored (prevOf).
			if prev == nil || prev != stored[k] {
				t.Fatalf("%s: event %d (%s %s at %d): prev %s, want the stored %s", name, i, k.kind, k.id, ev.GetIndex(), versionOf(prev), versionOf(stored[k]))
			}
		} else if prev != nil {
			t.Fatalf("%s: event %d (%s %s %v): prev %v, want nil", name, i, k.kind, k.id, ev.GetAction(), prev)
		}
		if ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_DELETE {
			delete(stored, k)
		} else {
			stored[k] = o
		}
	}
	return updates
}

func versionOf(o Object) string {
	if o == nil {
		return "none"
	}
	return fmt.Sprintf("%p (version %d)", o, o.GetMeta().GetVersion())
}

// serviceEntry is randomEntry mostly of services: 1-4 ops, a second op on
// a service in the entry expecting the entry's own version (or none), so
// that entries naming one service twice apply as often as they fail.
func serviceEntry(t testing.TB, rng *rand.Rand, r Reader, index uint64) *raft.Log {
	if rng.IntN(30) == 0 {
		return &raft.Log{Index: index, Type: raft.LogCommand, Data: []byte{0xff, byte(rng.IntN(256))}}
	}
	var ops []*shoalv1.StoreOp
	named := map[string]bool{}
	for range 1 + rng.IntN(4) {
		var o Object
		if rng.IntN(4) == 0 {
			o = mkTask(fmt.Sprintf("t%d", rng.IntN(4)), "s0", "n0", 0, 0)
		} else {
			o = mkService(fmt.Sprintf("s%d", rng.IntN(4)), fmt.Sprintf("name%d", rng.IntN(6)))
		}
		kind, id := KindOf(o), o.GetMeta().GetId()
		version, exists := entryOpVersion(rng, r, kind, id, index, named)
		switch k := rng.IntN(10); {
		case k < 3 && !exists || k == 0:
			ops = append(ops, opCreate(o))
		case k < 9:
			ops = append(ops, opUpdate(o, version))
		default:
			ops = append(ops, opDelete(kind, id, version))
		}
	}
	return entry(t, index, ops...)
}

// replaced says whether prev is the stored service s as the ring keeps it:
// s's own meta, spec, VIPs and statuses (the same pointers), without its
// previous_spec.
func replaced(prev, s Object) bool {
	p, ok := prev.(*shoalv1.Service)
	c, ok2 := s.(*shoalv1.Service)
	return ok && ok2 && p.Meta == c.Meta && p.Spec == c.Spec && p.PreviousSpec == nil && p.SpecVersion == c.SpecVersion &&
		(len(p.Vips) == 0 && len(c.Vips) == 0 || len(p.Vips) == len(c.Vips) && &p.Vips[0] == &c.Vips[0]) &&
		p.UpdateStatus == c.UpdateStatus && p.JobStatus == c.JobStatus && p.RebalanceRequested == c.RebalanceRequested
}

// TestWatchRingKeepsNoPreviousSpecOfPrev: what the ring keeps of the
// service an update replaced is what the filters read (its spec, VIPs,
// meta), not its previous_spec, which nothing else holds once the service
// has moved on: a ring of UpdateService writes of distinct services with
// 64 KiB of env held 74.6 KB more per event, 1.1 GiB for the 16,384 events
// of a full ring (BenchmarkWatchRingPrevMemory, api).
func TestWatchRingKeepsNoPreviousSpecOfPrev(t *testing.T) {
	s := single(t, options{})
	sub, err := s.WatchNode(context.Background(), 0, "n1", nil) // a node session: prevs are kept
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	mustUpdate(t, s, func(tx WriteTx) error { return tx.Create(mkService("s1", "web")) })
	update := func() *shoalv1.Service {
		var before *shoalv1.Service
		mustUpdate(t, s, func(tx WriteTx) error {
			cur, _ := Get[*shoalv1.Service](tx, "s1")
			before = cur
			spec := proto.Clone(cur.GetSpec()).(*shoalv1.ServiceSpec)
			spec.Labels = map[string]string{"v": fmt.Sprint(cur.GetMeta().GetVersion())}
			return tx.Update(&shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1", Version: cur.GetMeta().GetVersion()}, Spec: spec, PreviousSpec: cur.GetSpec()})
		})
		return before
	}
	update()
	before := update() // has a previous_spec of its own
	if before.GetPreviousSpec() == nil {
		t.Fatal("the replaced version has no previous_spec: the test's premise")
	}
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	last := s.hub.ring[len(s.hub.ring)-1]
	if !replaced(last.prev, before) {
		t.Fatalf("the ring keeps %v for the replaced %v: want its fields less previous_spec", last.prev, before)
	}
}

// entryOpVersion is the version an op of a random entry names for object
// id (randomVersion; for the second op on an object in the entry, half the
// time none or the entry's own index, so that such entries apply as often
// as they fail), and whether the object exists before the entry.
func entryOpVersion(rng *rand.Rand, r Reader, kind Kind, id string, index uint64, named map[string]bool) (version uint64, exists bool) {
	version = randomVersion(rng, r, kind, id, index, 8)
	if named[id] && rng.IntN(2) == 0 {
		version = []uint64{0, index}[rng.IntN(2)]
	}
	named[id] = true
	return version, r.Get(kind, id) != nil
}
