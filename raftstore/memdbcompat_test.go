package raftstore

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// testdata/memdb-build was written by the go-memdb build of the store
// (commit 5849e3f, the last before the own tables) from 624 entries: 300
// of randomEntry, 300 of randomTaskEntry (compact ops, shared specs, failed
// entries of both), 8 of a cluster, networks (renames, names refused as
// taken, a name freed by a delete) and nodes named by spec or hostname,
// and 16 that leave 1,286 tasks in trees three levels deep. It holds the
// entries, the snapshot that build persisted after them, and stateOf
// (every object and every index's keys, in order); gen_test.go.txt is the
// test that wrote them, run in that commit's raftstore/.
// During a rolling upgrade replicas of both builds apply the same log and
// restore each other's snapshots, so the tables must agree with memdb
// exactly.

func goldenFile(t *testing.T, name string) []byte {
	t.Helper()
	f, err := os.Open("testdata/memdb-build/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func goldenEntries(t *testing.T) []*raft.Log {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(goldenFile(t, "entries.bin.gz")))
	var logs []*raft.Log
	for {
		index, err := binary.ReadUvarint(r)
		if err == io.EOF {
			return logs
		}
		typ, err1 := binary.ReadUvarint(r)
		size, err2 := binary.ReadUvarint(r)
		data := make([]byte, size)
		_, err3 := io.ReadFull(r, data)
		if err != nil || err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("entries: %v %v %v %v", err, err1, err2, err3)
		}
		if size == 0 {
			data = nil
		}
		logs = append(logs, &raft.Log{Index: index, Type: raft.LogType(typ), Data: data})
	}
}

func persisted(t *testing.T, f *fsm) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

// atGoldenFormat is state (stateOf) with the old-manager count as the
// golden state has it: its manager reports store format 4, the format of
// the build that wrote it, which a binary of a newer StoreFormat counts
// as old. The count is the binary's reading of the state, not state: it
// must still agree with the count from scratch.
func atGoldenFormat(t *testing.T, state string) string {
	t.Helper()
	first, rest, _ := strings.Cut(state, "\n")
	var applied, n, scratch int
	if _, err := fmt.Sscanf(first, "applied %d old managers %d (from scratch %d)", &applied, &n, &scratch); err != nil || n != scratch {
		t.Fatalf("first line %q: %v", first, err)
	}
	if StoreFormat > 4 && n == 1 {
		n, scratch = 0, 0
	}
	return fmt.Sprintf("applied %d old managers %d (from scratch %d)\n%s", applied, n, scratch, rest)
}

// The tables restore the memdb build's snapshot to the very state that
// build had (objects and index keys), and persist it again byte for byte.
func TestRestoresMemdbBuildSnapshot(t *testing.T) {
	want, snap := string(goldenFile(t, "state.txt.gz")), goldenFile(t, "snapshot.bin.gz")
	f := newFSM(slog.New(slog.DiscardHandler), newHub(1<<10))
	if err := f.Restore(readCloser{bytes.NewReader(snap)}); err != nil {
		t.Fatal(err)
	}
	if got := atGoldenFormat(t, stateOf(t, f)); got != want {
		t.Fatalf("restored state differs from the memdb build's:\n%s", firstDiff(got, want))
	}
	if !bytes.Equal(persisted(t, f), snap) {
		t.Fatal("the restored state persists to other bytes than the memdb build's snapshot")
	}
}

// The tables apply the memdb build's log, one entry at a time and in
// random batches with failed entries anywhere, to the state that build
// reached, and persist the same snapshot bytes.
func TestReplaysMemdbBuildEntries(t *testing.T) {
	logs := goldenEntries(t)
	want, snap := string(goldenFile(t, "state.txt.gz")), goldenFile(t, "snapshot.bin.gz")
	for seed := uint64(0); seed <= 6; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			f := newFSM(slog.New(slog.DiscardHandler), newHub(1<<10))
			if seed == 0 {
				applyOneByOne(f, logs)
			} else {
				rng := rand.New(rand.NewPCG(seed, 3))
				f.txnOps = []int{0, 1, 2, 5, 17, 150}[rng.IntN(6)]
				for at := 0; at < len(logs); {
					n := min(1+rng.IntN(64), len(logs)-at)
					f.ApplyBatch(logs[at : at+n])
					at += n
				}
			}
			if got := atGoldenFormat(t, stateOf(t, f)); got != want {
				t.Fatalf("state differs from the memdb build's:\n%s", firstDiff(got, want))
			}
			if !bytes.Equal(persisted(t, f), snap) {
				t.Fatal("the snapshot's bytes differ from the memdb build's")
			}
		})
	}
}

// firstDiff shows where two renderings part.
func firstDiff(got, want string) string {
	gl, wl := bytes.Split([]byte(got), []byte("\n")), bytes.Split([]byte(want), []byte("\n"))
	for i := 0; i < len(gl) || i < len(wl); i++ {
		var g, w []byte
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if !bytes.Equal(g, w) {
			return fmt.Sprintf("line %d:\n got  %.400s\n want %.400s", i+1, g, w)
		}
	}
	return "(equal)"
}
