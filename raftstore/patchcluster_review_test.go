package raftstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Concurrent writers on a three-node cluster mix PatchService (the
// caller's patched spec kept, or patched by the tx), several patches in
// one entry, a patch with a task of the service created after it, whole
// updates moving the stored spec, and conflicting writes; the leader,
// which stores its txs' specs, ends equal to the followers, which decode
// and patch every entry (batches included).
func TestPatchedSpecsReplicasEqualUnderConcurrentWrites(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	const services = 4
	c.update(func(tx WriteTx) error {
		for i := 0; i < services; i++ {
			if err := tx.Create(benchService(fmt.Sprintf("s%d", i), 0)); err != nil {
				return err
			}
		}
		return nil
	})
	leader := c.leader().store
	patchOne := func(tx WriteTx, rng *rand.Rand, id string, callerSpec bool) error {
		cur, ok := Get[*shoalv1.Service](tx, id)
		if !ok {
			return nil
		}
		patch := &shoalv1.ServicePatch{}
		switch rng.Intn(3) {
		case 0:
			patch.LabelsAdd = map[string]string{fmt.Sprintf("k%d", rng.Intn(4)): fmt.Sprint(rng.Intn(100))}
		case 1:
			patch.LabelsRm = []string{fmt.Sprintf("k%d", rng.Intn(4)), "bench"}
		}
		if patch.LabelsAdd == nil || rng.Intn(2) == 0 {
			patch.Replicas = int64p(int64(rng.Intn(5)))
		}
		svc := &shoalv1.Service{Meta: copyMeta(cur.GetMeta()), PreviousSpec: cur.GetSpec(), SpecVersion: cur.GetSpecVersion(),
			Vips: cur.GetVips(), UpdateStatus: cur.GetUpdateStatus()}
		if callerSpec {
			svc.Spec = PatchSpec(cur.GetSpec(), patch)
		}
		return tx.PatchService(svc, patch)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			for i := 0; i < 150; i++ {
				id := fmt.Sprintf("s%d", rng.Intn(services))
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				_, err := leader.Update(ctx, func(tx WriteTx) error {
					switch rng.Intn(5) {
					case 0: // two services patched in one entry
						if err := patchOne(tx, rng, id, rng.Intn(2) == 0); err != nil {
							return err
						}
						return patchOne(tx, rng, fmt.Sprintf("s%d", (rng.Intn(services-1)+1+int(id[1]-'0'))%services), rng.Intn(2) == 0)
					case 1: // a patch, then a task of the patched service
						if err := patchOne(tx, rng, id, true); err != nil {
							return err
						}
						svc, _ := Get[*shoalv1.Service](tx, id)
						task := mkTask(fmt.Sprintf("t%d-%d", w, i), id, "", shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_PENDING)
						task.Spec = svc.GetSpec().GetTask()
						return tx.Create(task)
					case 2: // a whole update: the stored spec moves
						cur, ok := Get[*shoalv1.Service](tx, id)
						if !ok {
							return nil
						}
						n := benchService(id, cur.GetMeta().GetVersion())
						n.Spec.Task.Container.Args = []string{fmt.Sprint(i)}
						n.PreviousSpec = cur.GetSpec()
						return tx.Update(n)
					default:
						return patchOne(tx, rng, id, rng.Intn(2) == 0)
					}
				})
				cancel()
				if err != nil && !errors.Is(err, ErrVersionConflict) {
					errs <- fmt.Errorf("writer %d, write %d: %w", w, i, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	idx := c.update(func(tx WriteTx) error { return tx.Create(mkNetwork("n-last", "last")) })
	c.converge(dump(leader.View()), idx)
}
