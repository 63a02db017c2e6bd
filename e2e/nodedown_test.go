package e2e

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestNodeDown: a worker loses power (kill -9 of its processes and its link
// down); the managers mark its node DOWN (the time from the power cut is
// logged) while the other nodes stay READY, and its tasks are replaced on
// the live nodes. Powered on again (`shoal daemon`), it is READY again.
// Deadlines are generous; the replacement time is BenchmarkPowerCut's.
func TestNodeDown(t *testing.T) {
	c := newCluster(t, 1, 2)
	h1, victim, bystander := c.hosts[0], c.workers[0], c.workers[1]
	cl := h1.Local()

	{
		ctx, cancel := attempt()
		err := createService(ctx, cl, "spread", 3)
		cancel()
		if err != nil {
			t.Fatalf("service create: %v", err)
		}
	}
	victimID := c.id(victim)
	waitSpread := func(check func(lv []*shoalv1.Task) error) {
		t.Helper()
		harness.Eventually(t, settleTimeout, poll, func() error {
			ctx, cancel := attempt()
			defer cancel()
			tasks, err := serviceTasks(ctx, cl, "spread")
			if err != nil {
				return err
			}
			lv := live(tasks)
			if len(lv) != 3 {
				return fmt.Errorf("%d live tasks, want 3: %s", len(lv), describeTasks(tasks))
			}
			for _, tk := range lv {
				if tk.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
					return fmt.Errorf("task %s is %s: %s", tk.GetMeta().GetId(), tk.GetStatus().GetState(), describeTasks(lv))
				}
			}
			return check(lv)
		})
	}
	waitSpread(func(lv []*shoalv1.Task) error {
		if n := perNode(lv)[victimID]; n != 1 {
			return fmt.Errorf("%d tasks on %s, want 1 (one per node): %s", n, victim, describeTasks(lv))
		}
		return nil
	})

	cut := time.Now()
	if err := victim.PowerOff(); err != nil {
		t.Fatal(err)
	}
	c.waitNodes(h1, func(nodes []*shoalv1.Node) error {
		n := findNode(nodes, victimID)
		if n == nil {
			return fmt.Errorf("node %s of %s not listed", victimID, victim)
		}
		if st := n.GetStatus().GetState(); st != shoalv1.NodeState_NODE_STATE_DOWN {
			return fmt.Errorf("%s is %s, want DOWN", victim, st)
		}
		return nil
	})
	t.Logf("node down: %s marked DOWN %v after its power-off", victim, time.Since(cut).Round(time.Millisecond))

	// The others are unaffected.
	c.waitNodes(h1, func(nodes []*shoalv1.Node) error {
		if err := c.nodeReady(nodes, h1, shoalv1.NodeRole_NODE_ROLE_MANAGER); err != nil {
			return err
		}
		return c.nodeReady(nodes, bystander, shoalv1.NodeRole_NODE_ROLE_WORKER)
	})
	// Its task is replaced on a live node.
	waitSpread(func(lv []*shoalv1.Task) error {
		if n := perNode(lv)[victimID]; n != 0 {
			return fmt.Errorf("%d live tasks still on the DOWN node %s: %s", n, victim, describeTasks(lv))
		}
		return nil
	})
	// How fast is BenchmarkPowerCut's figure, not this test's claim.
	t.Logf("its task was replaced %v after the power-off", time.Since(cut).Round(time.Millisecond))

	// Power back on: the node comes back READY.
	on := time.Now()
	p := victim.PowerOn(t)
	c.waitNodes(h1, func(nodes []*shoalv1.Node) error {
		if err := p.CheckRunning(); err != nil {
			return err
		}
		return c.nodeReady(nodes, victim, shoalv1.NodeRole_NODE_ROLE_WORKER)
	})
	t.Logf("%s READY again %v after power-on", victim, time.Since(on).Round(time.Millisecond))
}

// BenchmarkPowerCut measures what a node's death costs: on 1 manager and 3
// workers with a 6-replica service on the workers, 10 times (or
// SHOAL_E2E_POWERCUT_RUNS): PowerOff of the worker holding the most live
// tasks, then the time until the managers list it DOWN and until every
// replica is RUNNING on another node (polled every 20 ms through the CLI,
// whose own ~30 ms, more on a loaded machine, is included), and the latest
// RUNNING status time of the replacements (without the polls); then
// PowerOn and wait until it is READY. It reports p50 and max of each (ms),
// and logs every sample:
//
//	go test -count=1 -p 1 -run '^$' -bench PowerCut -benchtime 1x ./e2e/
func BenchmarkPowerCut(b *testing.B) {
	runs := 10
	if v := os.Getenv("SHOAL_E2E_POWERCUT_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("SHOAL_E2E_POWERCUT_RUNS=%q: want a positive number", v)
		}
		runs = n
	}
	const replicas = 6
	c := newCluster(b, 1, 3)
	h1 := c.hosts[0]
	cl := h1.Local()
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "cut", replicas, onWorker)
		cancel()
		if err != nil {
			b.Fatalf("service create: %v", err)
		}
	}
	harness.WaitRunning(b, cl, "cut", replicas, runTimeout)

	var downs, replaced, runningAt []time.Duration
	for b.Loop() {
		for i := 1; i <= runs; i++ {
			ctx, cancel := attempt()
			tasks, err := serviceTasks(ctx, cl, "cut")
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			per := perNode(live(tasks))
			var victim *harness.Host
			for _, w := range c.workers {
				if victim == nil || per[c.id(w)] > per[c.id(victim)] {
					victim = w
				}
			}
			vID := c.id(victim)
			cut := time.Now()
			if err := victim.PowerOff(); err != nil {
				b.Fatal(err)
			}
			var down time.Duration
			harness.Eventually(b, settleTimeout, 20*time.Millisecond, func() error {
				ctx, cancel := attempt()
				defer cancel()
				if down == 0 {
					nodes, err := c.nodes(ctx, h1)
					if err != nil {
						return err
					}
					if findNode(nodes, vID).GetStatus().GetState() != shoalv1.NodeState_NODE_STATE_DOWN {
						return fmt.Errorf("%s not DOWN yet", victim)
					}
					down = time.Since(cut)
				}
				tasks, err := serviceTasks(ctx, cl, "cut")
				if err != nil {
					return err
				}
				lv := live(tasks)
				if len(lv) != replicas || perNode(lv)[vID] != 0 {
					return fmt.Errorf("%d live tasks, %d on the dead %s", len(lv), perNode(lv)[vID], victim)
				}
				for _, tk := range lv {
					if tk.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
						return fmt.Errorf("task %s is %s", tk.GetMeta().GetId(), tk.GetStatus().GetState())
					}
				}
				return nil
			})
			took := time.Since(cut)
			// The same from the replacements' own RUNNING status times
			// (the agents share the machine's clock): without the CLI
			// polls' latency, which a loaded machine makes hundreds of ms.
			var ran time.Duration
			{
				ctx, cancel := attempt()
				tasks, err := serviceTasks(ctx, cl, "cut")
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				for _, tk := range live(tasks) {
					if tk.GetMeta().GetCreatedAt().AsTime().After(cut) {
						ran = max(ran, tk.GetStatus().GetTimestamp().AsTime().Sub(cut))
					}
				}
			}
			downs, replaced, runningAt = append(downs, down), append(replaced, took), append(runningAt, ran)
			b.Logf("run %d/%d: power cut of %s (%d tasks): DOWN after %v, all %d RUNNING elsewhere after %v (seen by the poll), %v (their status times)",
				i, runs, victim, per[vID], down.Round(time.Millisecond), replicas, took.Round(time.Millisecond), ran.Round(time.Millisecond))

			p := victim.PowerOn(b)
			c.waitNodes(h1, func(nodes []*shoalv1.Node) error {
				if err := p.CheckRunning(); err != nil {
					return err
				}
				return c.nodeReady(nodes, victim, shoalv1.NodeRole_NODE_ROLE_WORKER)
			})
		}
	}
	report := func(name string, ds []time.Duration) {
		s := slices.Clone(ds)
		slices.Sort(s)
		p50, max := s[(len(s)-1)/2], s[len(s)-1]
		b.ReportMetric(float64(p50.Milliseconds()), name+"-p50-ms")
		b.ReportMetric(float64(max.Milliseconds()), name+"-max-ms")
		b.Logf("POWERCUT %s runs=%d p50=%v max=%v samples=%v", name, len(s), p50.Round(time.Millisecond), max.Round(time.Millisecond), ds)
	}
	report("down", downs)
	report("replaced", replaced)
	report("running-status", runningAt)
}
