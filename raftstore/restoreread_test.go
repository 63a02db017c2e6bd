package raftstore

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/hashicorp/raft"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Restores swapping the whole state while readers take views (run with
// -race): every view holds one state whole, with the applied index of that
// state, its indexes agreeing with its objects.
func TestRestoreWhileReading(t *testing.T) {
	// Two snapshots: 600 tasks of service A at index 100, 900 of B at 200.
	snapOf := func(svc string, tasks int, index uint64) []byte {
		f := newTestFSM()
		var ops []*shoalv1.StoreOp
		for i := range tasks {
			ops = append(ops, opCreate(mkTask(fmt.Sprintf("%s%04d", svc, i), svc, "n1", shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_RUNNING)))
		}
		f.ApplyBatch([]*raft.Log{entry(t, index, ops...)})
		return persisted(t, f)
	}
	snaps := [][]byte{snapOf("A", 600, 100), snapOf("B", 900, 200)}
	want := map[uint64]struct {
		svc   string
		tasks int
	}{100: {"A", 600}, 200: {"B", 900}}

	f := newTestFSM()
	if err := f.Restore(readCloser{bytes.NewReader(snaps[0])}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	errs := make(chan error, 2)
	var wg sync.WaitGroup
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
				v := f.view()
				w, ok := want[v.index]
				all := v.List(KindTask)
				byService := v.Find(KindTask, IndexServiceID, w.svc)
				if !ok || len(all) != w.tasks || len(byService) != w.tasks || all[0].(*shoalv1.Task).GetServiceId() != w.svc {
					errs <- fmt.Errorf("a view at index %d holds %d tasks, %d of service %q; want %d of %q", v.index, len(all), len(byService), w.svc, w.tasks, w.svc)
					return
				}
			}
		}()
	}
	for i := range 60 {
		if err := f.Restore(readCloser{bytes.NewReader(snaps[i%2])}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}
