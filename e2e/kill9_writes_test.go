package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// writeTimeout bounds one create of the writer loop; a call cut off by it
// is "uncertain" (it may or may not have committed).
const writeTimeout = 15 * time.Second

// TestKill9AtRandomMomentsLosesNoAckedWrite: with 3 managers, a client
// creates services one after another while managers are kill -9'd (the
// leader at least once, then one chosen at random) and restarted; at the
// end all managers are kill -9'd at once and restarted. Every create the
// CLI acknowledged (exit 0) must then be present through every manager,
// and no service may exist that was never asked for.
//
// What it cannot tell: kill -9 ends the processes, not the machine, so the
// page cache survives and whatever was written but never fsynced is still
// read back. A missing fsync passes this test; only a power cut of the
// disk (not available in this harness) would show it.
func TestKill9AtRandomMomentsLosesNoAckedWrite(t *testing.T) {
	c := newCluster(t, 3, 0)
	h1 := c.hosts[0]
	// The writer runs on a host of its own (no shoal process there), so
	// killing every process of a manager's host never kills an in-flight
	// client call.
	client := c.addHost()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("victim choice seed %d", seed)

	var (
		mu        sync.Mutex // guards acked and uncertain
		acked     []string
		uncertain []string
	)
	countAcked := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			// Each call may use any manager, starting with a different one
			// each time, so progress does not hinge on one of them.
			addrs := make([]string, len(c.managers))
			for j := range c.managers {
				addrs[j] = c.managers[(i+j)%len(c.managers)].Addr()
			}
			name := fmt.Sprintf("w%04d", i)
			wctx, cancel := context.WithTimeout(ctx, writeTimeout)
			err := createService(wctx, client.Remote(c.adminDir, addrs...), name, 1)
			cancel()
			mu.Lock()
			if err == nil {
				acked = append(acked, name)
			} else {
				uncertain = append(uncertain, name)
			}
			mu.Unlock()
		}
	}()
	stopWriter := func() {
		stop()
		<-done
	}
	defer stopWriter()

	// waitAcks waits for n more acknowledged creates.
	waitAcks := func(n int, during string) {
		t.Helper()
		target := countAcked() + n
		harness.Eventually(t, settleTimeout, 50*time.Millisecond, func() error {
			if got := countAcked(); got < target {
				return fmt.Errorf("%d acknowledged creates, want %d (%s)", got, target, during)
			}
			return nil
		})
	}

	const rounds = 3
	for round := range rounds {
		waitAcks(3, "before the kill")
		leader := c.leader(h1, nil)
		victim := leader
		if round > 0 {
			victim = c.managers[rng.IntN(len(c.managers))]
		}
		start := time.Now()
		if err := victim.Crash(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: kill -9 %s (leader: %v) with %d creates acknowledged", round, victim, victim == leader, countAcked())
		waitAcks(3, fmt.Sprintf("while %s is down", victim))
		t.Logf("round %d: writes continued %v after the kill", round, time.Since(start).Round(time.Millisecond))
		p := victim.Daemon(t)
		c.waitNodes(victim, func(nodes []*shoalv1.Node) error {
			if err := p.CheckRunning(); err != nil {
				return err
			}
			for _, m := range c.managers {
				if err := c.nodeReady(nodes, m, shoalv1.NodeRole_NODE_ROLE_MANAGER); err != nil {
					return err
				}
			}
			_, err := leaderOf(nodes)
			return err
		})
		t.Logf("round %d: %s restarted and serving %v after the kill", round, victim, time.Since(start).Round(time.Millisecond))
	}
	waitAcks(3, "after the last restart")
	stopWriter()

	// kill -9 of the whole control plane at once (not a power cut: the
	// page cache survives), then everyone back.
	for _, m := range c.managers {
		if err := m.Crash(); err != nil {
			t.Fatal(err)
		}
	}
	restart := time.Now()
	procs := make([]*harness.Proc, len(c.managers))
	for i, m := range c.managers {
		procs[i] = m.Daemon(t)
	}
	c.leader(h1, nil)
	t.Logf("all managers kill -9'd and restarted; leader elected %v after the restart", time.Since(restart).Round(time.Millisecond))

	mu.Lock()
	ackedSet := map[string]bool{}
	for _, n := range acked {
		ackedSet[n] = true
	}
	uncertainSet := map[string]bool{}
	for _, n := range uncertain {
		uncertainSet[n] = true
	}
	mu.Unlock()
	t.Logf("%d creates acknowledged, %d uncertain (failed or cut off)", len(ackedSet), len(uncertainSet))
	if len(ackedSet) == 0 {
		t.Fatal("no create was acknowledged")
	}

	for i, m := range c.managers {
		var present map[string]bool
		harness.Eventually(t, settleTimeout, poll, func() error {
			if err := procs[i].CheckRunning(); err != nil {
				return err
			}
			ctx, cancel := attempt()
			defer cancel()
			svcs, err := services(ctx, c.admin(m))
			if err != nil {
				return err
			}
			present = serviceNames(svcs)
			return nil
		})
		var lost, unexpected []string
		for n := range ackedSet {
			if !present[n] {
				lost = append(lost, n)
			}
		}
		landed := 0
		for n := range present {
			switch {
			case ackedSet[n]:
			case uncertainSet[n]:
				landed++
			default:
				unexpected = append(unexpected, n)
			}
		}
		slices.Sort(lost)
		slices.Sort(unexpected)
		if len(lost) > 0 {
			t.Errorf("via %s: %d acknowledged creates lost: %v", m, len(lost), lost)
		}
		if len(unexpected) > 0 {
			t.Errorf("via %s: services nobody created: %v", m, unexpected)
		}
		t.Logf("via %s: %d services: all %d acknowledged present: %v; %d of the uncertain ones landed",
			m, len(present), len(ackedSet), len(lost) == 0, landed)
	}
}
