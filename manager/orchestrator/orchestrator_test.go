package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// Loop tests run the orchestrator on a real one-node in-memory raft store.
// They never sleep to synchronise: they poll a condition until a deadline.

const (
	waitFor      = 15 * time.Second // generous: 2 busy cores, -race
	pollInterval = 5 * time.Millisecond
	raftTimeout  = 100 * time.Millisecond
)

func testLogger() *slog.Logger {
	if os.Getenv("ORCHESTRATOR_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, waitFor, err)
		}
		time.Sleep(pollInterval) // poll interval, not synchronisation
	}
}

func openStore(t *testing.T) *raftstore.Store {
	t.Helper()
	_, trans := raft.NewInmemTransport("solo:4242")
	s, err := raftstore.Open(raftstore.Config{
		NodeID: "solo", InMemory: true, Transport: trans, Bootstrap: true,
		HeartbeatTimeout: raftTimeout, ElectionTimeout: raftTimeout, LeaderLeaseTimeout: raftTimeout,
		CommitTimeout: 5 * time.Millisecond, Logger: testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	eventually(t, "the store leads", func() error {
		if !s.IsLeader() {
			return errors.New("not leader yet")
		}
		return nil
	})
	return s
}

// startOrchestrator runs an orchestrator until the test ends, and checks
// that Run returns nil once its context is cancelled.
func startOrchestrator(t *testing.T, s store) *Orchestrator {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	o := newOrchestrator(s, testLogger())
	go func() { done <- o.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitFor):
			t.Error("Run did not return after its context was cancelled")
		}
	})
	return o
}

// write runs fn in an Update, retrying on version conflicts with the
// orchestrator's own writes.
func write(t *testing.T, s *raftstore.Store, fn func(tx raftstore.WriteTx) error) {
	t.Helper()
	eventually(t, "write", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := s.Update(ctx, fn)
		if err != nil && !errors.Is(err, raftstore.ErrVersionConflict) {
			t.Fatalf("update: %v", err)
		}
		return err
	})
}

func create(t *testing.T, s *raftstore.Store, objs ...raftstore.Object) {
	t.Helper()
	write(t, s, func(tx raftstore.WriteTx) error {
		for _, o := range objs {
			if err := tx.Create(proto.Clone(o).(raftstore.Object)); err != nil {
				return err
			}
		}
		return nil
	})
}

// changeService applies fn to a clone of the stored service.
func changeService(t *testing.T, s *raftstore.Store, id string, fn func(*shoalv1.Service)) {
	t.Helper()
	write(t, s, func(tx raftstore.WriteTx) error {
		svc, ok := raftstore.Get[*shoalv1.Service](tx, id)
		if !ok {
			return fmt.Errorf("service %q: %w", id, raftstore.ErrNotFound)
		}
		svc = proto.Clone(svc).(*shoalv1.Service)
		fn(svc)
		return tx.Update(svc)
	})
}

func changeNode(t *testing.T, s *raftstore.Store, id string, fn func(*shoalv1.Node)) {
	t.Helper()
	write(t, s, func(tx raftstore.WriteTx) error {
		n, ok := raftstore.Get[*shoalv1.Node](tx, id)
		if !ok {
			return fmt.Errorf("node %q: %w", id, raftstore.ErrNotFound)
		}
		n = proto.Clone(n).(*shoalv1.Node)
		fn(n)
		return tx.Update(n)
	})
}

// report plays the agents: every task matching pick gets status state.
func report(t *testing.T, s *raftstore.Store, pick func(*shoalv1.Task) bool, state shoalv1.TaskState) int {
	t.Helper()
	var n int
	write(t, s, func(tx raftstore.WriteTx) error {
		n = 0
		for _, tk := range raftstore.List[*shoalv1.Task](tx) {
			if !pick(tk) {
				continue
			}
			tk = cloneTask(tk)
			tk.Status = &shoalv1.TaskStatus{State: state, Timestamp: timestamppb.Now(), Message: "agent says " + short(state)}
			if err := tx.Update(tk); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n
}

func tasksOf(s *raftstore.Store, svcID string) []*shoalv1.Task {
	return raftstore.Find[*shoalv1.Task](s.View(), raftstore.IndexServiceID, svcID)
}

func liveOf(ts []*shoalv1.Task) []*shoalv1.Task {
	var out []*shoalv1.Task
	for _, t := range ts {
		if isLive(t) {
			out = append(out, t)
		}
	}
	return out
}

func perNode(ts []*shoalv1.Task) map[string]int {
	m := map[string]int{}
	for _, t := range ts {
		m[t.GetNodeId()]++
	}
	return m
}

func brief(ts []*shoalv1.Task) string {
	var out []string
	for _, t := range ts {
		out = append(out, fmt.Sprintf("%s[slot %d node %s %s/%s %q]", t.GetMeta().GetId()[:6], t.GetSlot(), t.GetNodeId(),
			short(t.GetDesiredState()), short(t.GetStatus().GetState()), t.GetStatus().GetMessage()))
	}
	sort.Strings(out)
	return fmt.Sprint(out)
}

// allAssigned checks n live tasks, every one ASSIGNED to a node.
func allAssigned(ts []*shoalv1.Task, n int) error {
	lv := liveOf(ts)
	if len(lv) != n {
		return fmt.Errorf("%d live tasks, want %d: %s", len(lv), n, brief(ts))
	}
	for _, t := range lv {
		if t.GetStatus().GetState() != tsAssigned || t.GetNodeId() == "" {
			return fmt.Errorf("task not assigned: %s", brief([]*shoalv1.Task{t}))
		}
	}
	return nil
}

func noRestartDelay() svcOpt { return restart(condAny, 0, 0, 0) }

func TestReplicatedScaleRestartAndHistory(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1"), mkNode("n2"))
	startOrchestrator(t, s)
	create(t, s, mkService("web", 10, noRestartDelay()))

	eventually(t, "10 tasks assigned, 5 per node", func() error {
		ts := tasksOf(s, "web")
		if err := allAssigned(ts, 10); err != nil {
			return err
		}
		if c := perNode(ts); c["n1"] != 5 || c["n2"] != 5 {
			return fmt.Errorf("spread %v, want 5 and 5", c)
		}
		slots := map[uint64]bool{}
		for _, tk := range ts {
			slots[tk.GetSlot()] = true
		}
		if len(slots) != 10 {
			return fmt.Errorf("slots %v, want 1..10", slots)
		}
		return nil
	})

	// Scale down: the seven extra tasks are asked to stop; being ASSIGNED,
	// they wait for their agent.
	changeService(t, s, "web", func(svc *shoalv1.Service) { svc.Spec.Replicas = 3 })
	stopping := func(tk *shoalv1.Task) bool {
		return tk.GetDesiredState() == tsShutdown && tk.GetStatus().GetState() == tsAssigned
	}
	eventually(t, "7 tasks stopping, 3 live", func() error {
		ts := tasksOf(s, "web")
		if len(ts) != 10 {
			return fmt.Errorf("%d tasks, want 10 (nothing created): %s", len(ts), brief(ts))
		}
		if err := allAssigned(ts, 3); err != nil {
			return err
		}
		n := 0
		for _, tk := range ts {
			if stopping(tk) {
				if tk.GetSlot() <= 3 {
					return fmt.Errorf("slot %d stopping", tk.GetSlot())
				}
				n++
			}
		}
		if n != 7 {
			return fmt.Errorf("%d stopping, want 7: %s", n, brief(ts))
		}
		return nil
	})
	if n := report(t, s, stopping, tsShutdown); n != 7 {
		t.Fatalf("agents reported %d tasks shut down, want 7", n)
	}
	eventually(t, "converged: 3 live, 7 in history", func() error {
		ts := tasksOf(s, "web")
		if len(ts) != 10 {
			return fmt.Errorf("%d tasks, want 10: %s", len(ts), brief(ts))
		}
		if err := allAssigned(ts, 3); err != nil {
			return err
		}
		for _, tk := range ts {
			if !isLive(tk) && (tk.GetStatus().GetState() != tsShutdown || tk.GetSlot() <= 3) {
				return fmt.Errorf("unexpected history task %s", brief([]*shoalv1.Task{tk}))
			}
		}
		return nil
	})

	// A task of slot 1 fails: restart policy ANY, no delay, so the slot
	// gets a new task, and the failed one stays as history.
	failed := report(t, s, func(tk *shoalv1.Task) bool { return tk.GetSlot() == 1 && isLive(tk) }, tsFailed)
	if failed != 1 {
		t.Fatalf("failed %d tasks, want 1", failed)
	}
	eventually(t, "slot 1 restarted", func() error {
		var live, hist int
		for _, tk := range tasksOf(s, "web") {
			if tk.GetSlot() != 1 {
				continue
			}
			if isLive(tk) && tk.GetStatus().GetState() == tsAssigned {
				live++
			} else if tk.GetStatus().GetState() == tsFailed {
				hist++
			}
		}
		if live != 1 || hist != 1 {
			return fmt.Errorf("slot 1: %d live assigned, %d failed: %s", live, hist, brief(tasksOf(s, "web")))
		}
		return allAssigned(tasksOf(s, "web"), 3)
	})

	// Failing slot 2 seven times leaves the 5 newest failures as history.
	for i := 0; i < 7; i++ {
		report(t, s, func(tk *shoalv1.Task) bool { return tk.GetSlot() == 2 && isLive(tk) }, tsFailed)
		eventually(t, "slot 2 restarted", func() error {
			for _, tk := range tasksOf(s, "web") {
				if tk.GetSlot() == 2 && isLive(tk) && tk.GetStatus().GetState() == tsAssigned {
					return nil
				}
			}
			return errors.New("no live task in slot 2 yet")
		})
	}
	eventually(t, "slot 2 history trimmed to 5", func() error {
		n := 0
		for _, tk := range tasksOf(s, "web") {
			if tk.GetSlot() == 2 && isTerminal(tk) {
				n++
			}
		}
		if n != HistoryLimit {
			return fmt.Errorf("slot 2 has %d terminal tasks, want %d", n, HistoryLimit)
		}
		return nil
	})
}

func TestRestartDelayAndUpdate(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1"))
	startOrchestrator(t, s)
	const delay = 300 * time.Millisecond
	create(t, s, mkService("api", 1, restart(condAny, delay, 0, 0)))
	eventually(t, "assigned", func() error { return allAssigned(tasksOf(s, "api"), 1) })

	report(t, s, isLive, tsFailed)
	var failedAt time.Time
	for _, tk := range tasksOf(s, "api") {
		if tk.GetStatus().GetState() == tsFailed {
			failedAt = statusTime(tk)
		}
	}
	eventually(t, "restarted after the delay", func() error { return allAssigned(tasksOf(s, "api"), 1) })
	for _, tk := range liveOf(tasksOf(s, "api")) {
		if c := createdTime(tk); c.Before(failedAt.Add(delay)) {
			t.Fatalf("replacement created %v after the failure, before the %v delay", c.Sub(failedAt), delay)
		}
	}

	// A new task spec replaces the live task in its slot.
	changeService(t, s, "api", func(svc *shoalv1.Service) {
		svc.Spec.Task.Container.Image = "demo@sha256:2"
		svc.SpecVersion++
	})
	eventually(t, "updated", func() error {
		ts := tasksOf(s, "api")
		if err := allAssigned(ts, 1); err != nil {
			return err
		}
		lv := liveOf(ts)[0]
		if lv.GetSpecVersion() != 2 || lv.GetSpec().GetContainer().GetImage() != "demo@sha256:2" || lv.GetSlot() != 1 {
			return fmt.Errorf("live task %s has spec_version %d", brief(ts), lv.GetSpecVersion())
		}
		return nil
	})
}

func TestGlobalServiceAndDrain(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1"), mkNode("n2"), mkNode("n3"))
	startOrchestrator(t, s)
	create(t, s, mkService("mon", 0, global(), noRestartDelay()))

	eventually(t, "one task per node", func() error {
		ts := tasksOf(s, "mon")
		if err := allAssigned(ts, 3); err != nil {
			return err
		}
		if c := perNode(ts); c["n1"] != 1 || c["n2"] != 1 || c["n3"] != 1 {
			return fmt.Errorf("spread %v", c)
		}
		for _, tk := range ts {
			if tk.GetSlot() != 0 {
				return fmt.Errorf("global task in slot %d", tk.GetSlot())
			}
		}
		return nil
	})

	changeNode(t, s, "n2", func(n *shoalv1.Node) { n.Spec.Availability = shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN })
	onN2Stopping := func(tk *shoalv1.Task) bool {
		return tk.GetNodeId() == "n2" && tk.GetDesiredState() == tsShutdown && tk.GetStatus().GetState() == tsAssigned
	}
	eventually(t, "n2's task stopping", func() error {
		ts := tasksOf(s, "mon")
		for _, tk := range ts {
			if onN2Stopping(tk) {
				return allAssigned(ts, 2)
			}
		}
		return fmt.Errorf("not yet: %s", brief(ts))
	})
	report(t, s, onN2Stopping, tsShutdown)
	eventually(t, "2 live, nothing new on n2", func() error {
		ts := tasksOf(s, "mon")
		if len(ts) != 3 {
			return fmt.Errorf("%d tasks, want 3: %s", len(ts), brief(ts))
		}
		if c := perNode(liveOf(ts)); c["n2"] != 0 {
			return fmt.Errorf("live on n2: %s", brief(ts))
		}
		return allAssigned(ts, 2)
	})

	// Back to active: n2 gets a task again.
	changeNode(t, s, "n2", func(n *shoalv1.Node) { n.Spec.Availability = shoalv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE })
	eventually(t, "n2 has a task again", func() error {
		ts := tasksOf(s, "mon")
		if err := allAssigned(ts, 3); err != nil {
			return err
		}
		if c := perNode(liveOf(ts)); c["n2"] != 1 {
			return fmt.Errorf("spread %v", c)
		}
		return nil
	})
}

func TestDrainMovesReplicatedTasks(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1"), mkNode("n2"))
	startOrchestrator(t, s)
	// Parallelism 0: no agent reports RUNNING here, and a drain moves
	// tasks under the update parallelism (TestDrainUnderParallelism).
	create(t, s, mkService("web", 4, noRestartDelay(), allAtOnce()))
	eventually(t, "assigned", func() error { return allAssigned(tasksOf(s, "web"), 4) })

	changeNode(t, s, "n1", func(n *shoalv1.Node) { n.Spec.Availability = shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN })
	eventually(t, "every live task on n2", func() error {
		ts := tasksOf(s, "web")
		if err := allAssigned(ts, 4); err != nil {
			return err
		}
		if c := perNode(liveOf(ts)); c["n2"] != 4 {
			return fmt.Errorf("spread %v: %s", c, brief(ts))
		}
		return nil
	})
}

func TestNodeDownOrphansAndReplaces(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1"), mkNode("n2"))
	startOrchestrator(t, s)
	create(t, s, mkService("web", 4, noRestartDelay()))
	eventually(t, "2 per node", func() error {
		ts := tasksOf(s, "web")
		if err := allAssigned(ts, 4); err != nil {
			return err
		}
		if c := perNode(ts); c["n1"] != 2 || c["n2"] != 2 {
			return fmt.Errorf("spread %v", c)
		}
		return nil
	})

	changeNode(t, s, "n1", func(n *shoalv1.Node) { n.Status.State = shoalv1.NodeState_NODE_STATE_DOWN })
	eventually(t, "n1's tasks orphaned and replaced on n2", func() error {
		ts := tasksOf(s, "web")
		if err := allAssigned(ts, 4); err != nil {
			return err
		}
		if c := perNode(liveOf(ts)); c["n2"] != 4 {
			return fmt.Errorf("live spread %v", c)
		}
		orphaned := 0
		for _, tk := range ts {
			if tk.GetNodeId() == "n1" {
				if tk.GetStatus().GetState() != tsOrphaned || tk.GetStatus().GetMessage() != "node down" {
					return fmt.Errorf("task on n1 not orphaned: %s", brief([]*shoalv1.Task{tk}))
				}
				orphaned++
			}
		}
		if orphaned != 2 {
			return fmt.Errorf("%d orphaned, want 2", orphaned)
		}
		return nil
	})
}

func TestServiceRemovedAndUnschedulable(t *testing.T) {
	s := openStore(t)
	startOrchestrator(t, s)
	// No nodes yet: the tasks wait, saying why.
	create(t, s, mkService("web", 2, noRestartDelay()), mkService("odd", 1, svcConstraints("node.labels.disk==ssd")))
	eventually(t, "pending with a reason", func() error {
		for _, tk := range append(tasksOf(s, "web"), tasksOf(s, "odd")...) {
			if tk.GetStatus().GetState() != tsPending || tk.GetStatus().GetMessage() != "no suitable node: the cluster has no nodes" {
				return fmt.Errorf("task %s", brief([]*shoalv1.Task{tk}))
			}
		}
		if n := len(tasksOf(s, "web")) + len(tasksOf(s, "odd")); n != 3 {
			return fmt.Errorf("%d tasks, want 3", n)
		}
		return nil
	})

	create(t, s, mkNode("n1"))
	eventually(t, "web assigned once a node arrives, odd still waiting", func() error {
		if err := allAssigned(tasksOf(s, "web"), 2); err != nil {
			return err
		}
		odd := tasksOf(s, "odd")
		if len(odd) != 1 || odd[0].GetStatus().GetMessage() != "no suitable node: 1 does not satisfy the constraints" {
			return fmt.Errorf("odd: %s", brief(odd))
		}
		return nil
	})

	write(t, s, func(tx raftstore.WriteTx) error {
		for _, id := range []string{"web", "odd"} {
			if err := tx.Delete(raftstore.KindService, id, 0); err != nil {
				return err
			}
		}
		return nil
	})
	eventually(t, "pending tasks deleted, assigned ones asked to go", func() error {
		if odd := tasksOf(s, "odd"); len(odd) != 0 {
			return fmt.Errorf("odd's tasks left: %s", brief(odd))
		}
		web := tasksOf(s, "web")
		if len(web) != 2 {
			return fmt.Errorf("web: %s", brief(web))
		}
		for _, tk := range web {
			if tk.GetDesiredState() != tsRemove || tk.GetStatus().GetState() != tsAssigned {
				return fmt.Errorf("web: %s", brief(web))
			}
		}
		return nil
	})
	report(t, s, func(tk *shoalv1.Task) bool { return tk.GetServiceId() == "web" }, tsShutdown)
	eventually(t, "every task gone", func() error {
		if ts := raftstore.List[*shoalv1.Task](s.View()); len(ts) != 0 {
			return fmt.Errorf("tasks left: %s", brief(ts))
		}
		return nil
	})
}

// cuttableStore hands out subscriptions the test can end, as the store
// does for a slow consumer.
type cuttableStore struct {
	*raftstore.Store
	watches atomic.Int32
	mu      sync.Mutex // guards subs
	subs    []*cutSub
}

func (c *cuttableStore) Watch(ctx context.Context, from uint64, kinds ...raftstore.Kind) (raftstore.Subscription, error) {
	inner, err := c.Store.Watch(ctx, from, kinds...)
	if err != nil {
		return nil, err
	}
	c.watches.Add(1)
	s := &cutSub{inner: inner, ch: make(chan *shoalv1.WatchEvent), stop: make(chan error, 1)}
	go s.forward()
	c.mu.Lock()
	c.subs = append(c.subs, s)
	c.mu.Unlock()
	return s, nil
}

func (c *cuttableStore) cutAll(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.subs {
		s.cut(err)
	}
	c.subs = nil
}

type cutSub struct {
	inner raftstore.Subscription
	ch    chan *shoalv1.WatchEvent
	stop  chan error
	err   atomic.Value // error, set before ch is closed
}

// forward is the only goroutine that closes ch.
func (s *cutSub) forward() {
	defer close(s.ch)
	for {
		select {
		case ev, ok := <-s.inner.C():
			if !ok {
				s.err.Store(s.inner.Err())
				return
			}
			select {
			case s.ch <- ev:
			case err := <-s.stop:
				s.err.Store(err)
				s.inner.Close()
				return
			}
		case err := <-s.stop:
			s.err.Store(err)
			s.inner.Close()
			return
		}
	}
}

func (s *cutSub) cut(err error) {
	select {
	case s.stop <- err:
	default:
	}
}

func (s *cutSub) C() <-chan *shoalv1.WatchEvent { return s.ch }
func (s *cutSub) Err() error {
	err, _ := s.err.Load().(error)
	return err
}
func (s *cutSub) Close() { s.cut(errors.New("closed by consumer")) }

func TestResyncAfterWatchEnds(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1"))
	cs := &cuttableStore{Store: s}
	startOrchestrator(t, cs)
	create(t, s, mkService("web", 2, noRestartDelay()))
	eventually(t, "assigned", func() error { return allAssigned(tasksOf(s, "web"), 2) })

	for i, cause := range []error{raftstore.ErrSlowConsumer, raftstore.ErrRestored, raftstore.ErrCompacted} {
		before := cs.watches.Load()
		cs.cutAll(fmt.Errorf("test: %w", cause))
		eventually(t, "both loops watch again", func() error {
			if n := cs.watches.Load(); n < before+2 {
				return fmt.Errorf("%d watches, want %d", n, before+2)
			}
			return nil
		})
		replicas := int64(3 + i)
		changeService(t, s, "web", func(svc *shoalv1.Service) { svc.Spec.Replicas = replicas })
		eventually(t, "scaled after the resync", func() error { return allAssigned(tasksOf(s, "web"), int(replicas)) })
	}
}
