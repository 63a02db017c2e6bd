package orchestrator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/metrics"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/scheduler"
)

// taskEvents records every task event's action and state, by task.
func taskEvents(t *testing.T, s *raftstore.Store) func() map[string][]string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	sub, err := s.Watch(ctx, s.View().Index()+1, raftstore.KindTask)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *shoalv1.WatchEvent, 1<<16)
	go func() {
		for ev := range sub.C() {
			got <- ev
		}
	}()
	seen := map[string][]string{}
	return func() map[string][]string {
		for {
			select {
			case ev := <-got:
				tk := raftstore.Unwrap(ev.GetObject()).(*shoalv1.Task)
				seen[tk.GetMeta().GetId()] = append(seen[tk.GetMeta().GetId()],
					fmt.Sprintf("%s %s %s", ev.GetAction().String(), short(tk.GetStatus().GetState()), tk.GetNodeId()))
			default:
				return seen
			}
		}
	}
}

// TestCreatedTasksArePlacedInTheirEntry: a replicated service's tasks are
// created already ASSIGNED to a node, in the entry that creates them: no
// task is ever stored PENDING and none is written a second time to be
// assigned; spread holds (3 nodes, 30 tasks: 10 each).
func TestCreatedTasksArePlacedInTheirEntry(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1"), mkNode("n2"), mkNode("n3"))
	events := taskEvents(t, s)
	startOrchestrator(t, s)
	create(t, s, mkService("web", 30, noRestartDelay()))
	eventually(t, "30 tasks assigned", func() error { return allAssigned(tasksOf(s, "web"), 30) })
	if c := perNode(tasksOf(s, "web")); c["n1"] != 10 || c["n2"] != 10 || c["n3"] != 10 {
		t.Fatalf("tasks per node %v, want 10 each", c)
	}
	var seen map[string][]string
	eventually(t, "an event per task", func() error {
		if seen = events(); len(seen) != 30 {
			return fmt.Errorf("%d tasks seen", len(seen))
		}
		return nil
	})
	for id, evs := range seen {
		tk, _ := raftstore.Get[*shoalv1.Task](s.View(), id)
		if want := fmt.Sprintf("%s assigned %s", shoalv1.WatchAction_WATCH_ACTION_CREATE.String(), tk.GetNodeId()); len(evs) != 1 || evs[0] != want {
			t.Errorf("task %s: events %q, want one creation %q", id, evs, want)
		}
	}
}

// TestPlacementAtCreationLeavesTheRestPending: tasks the reconciler cannot
// place (no memory left) and tasks waiting for the allocator (on a
// network) are created PENDING; the scheduler loop records why the first
// cannot be placed; the reconciler's placements and the scheduler loop's
// count each other's: no node is given more than its memory.
func TestPlacementAtCreationLeavesTheRestPending(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1", memory(1<<30)), mkNode("n2", memory(1<<30)))
	startOrchestrator(t, s)
	quarter := func(svc *shoalv1.Service) {
		svc.Spec.Task.Resources = &shoalv1.ResourceRequirements{Reservations: &shoalv1.Resources{MemoryBytes: 256 << 20}}
	}
	create(t, s, mkService("a", 6, noRestartDelay(), quarter))
	eventually(t, "6 tasks assigned", func() error { return allAssigned(tasksOf(s, "a"), 6) })
	// 10 more: 2 fit, 8 do not.
	create(t, s, mkService("b", 10, noRestartDelay(), quarter))
	eventually(t, "2 of b placed, 8 pending with the reason", func() error {
		var placed, why int
		for _, tk := range tasksOf(s, "b") {
			switch {
			case tk.GetNodeId() != "":
				placed++
			case tk.GetStatus().GetState() == tsPending && tk.GetStatus().GetMessage() != msgPending:
				why++
			}
		}
		if placed != 2 || why != 8 {
			return fmt.Errorf("%d placed, %d pending with a reason: %s", placed, why, brief(tasksOf(s, "b")))
		}
		return nil
	})
	used := map[string]int64{}
	for _, svc := range []string{"a", "b"} {
		for _, tk := range liveOf(tasksOf(s, svc)) {
			used[tk.GetNodeId()] += tk.GetSpec().GetResources().GetReservations().GetMemoryBytes()
		}
	}
	if used["n1"] > 1<<30 || used["n2"] > 1<<30 {
		t.Fatalf("memory reserved per node %v, above 1 GiB", used)
	}
	// A task on a network waits for its addresses: created PENDING.
	create(t, s, mkService("c", 1, noRestartDelay(), func(svc *shoalv1.Service) {
		svc.Spec.Task.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: "net1"}}
	}))
	eventually(t, "c's task created", func() error {
		if ts := tasksOf(s, "c"); len(ts) != 1 {
			return fmt.Errorf("%d tasks", len(ts))
		}
		return nil
	})
	if tk := tasksOf(s, "c")[0]; tk.GetNodeId() != "" || tk.GetStatus().GetState() != tsPending {
		t.Fatalf("a task waiting for its network's addresses was placed: %s", brief([]*shoalv1.Task{tk}))
	}
}

// reconcilerPass runs one full reconciler pass over what s holds, with
// the shared placement set to placed (what the scheduler loop's events had
// told it when the pass began; nil: read from the store), and returns the
// orchestrator.
func reconcilerPass(t *testing.T, s *raftstore.Store, placed *scheduler.Placed, log *slog.Logger) *Orchestrator {
	t.Helper()
	o := newOrchestrator(s, log)
	o.now = func() time.Time { return t0 }
	o.place.placed = placed
	r := newReconciler(o)
	r.resync()
	if _, err := r.pass(context.Background(), t0); err != nil {
		t.Fatal(err)
	}
	return o
}

// TestPlacementAtCreationCountsWhatThePassRead: the shared placement is
// fed by the scheduler loop's own watch, which may lag the entry the
// reconciler reads (the event of the failure that makes the pass is
// still queued there). The replacement of a task that failed on n2 must
// still go to n2, the node without a task of the service, not to n1 (the
// stale count says 1 each, and the tie goes to n1): the pass counts the
// service's tasks as it read them, as the scheduler loop did when it
// placed the PENDING replacement after observing the failure.
func TestPlacementAtCreationCountsWhatThePassRead(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1"), mkNode("n2"))
	svc := mkService("web", 2, noRestartDelay())
	create(t, s, svc)
	ok := mkTask("web.1", "web", 1, onNode("n1"))
	failed := mkTask("web.2", "web", 2, onNode("n2"))
	create(t, s, ok, failed)
	stale := scheduler.PlacedOf([]*shoalv1.Task{
		proto.Clone(ok).(*shoalv1.Task), proto.Clone(failed).(*shoalv1.Task),
	})
	write(t, s, func(tx raftstore.WriteTx) error {
		cur, _ := raftstore.Get[*shoalv1.Task](tx, "web.2")
		st := &shoalv1.TaskStatus{State: tsFailed, Timestamp: timestamppb.New(ago(time.Minute))}
		return tx.UpdateTaskStatus("web.2", cur.GetMeta().GetVersion(), st)
	})
	o := reconcilerPass(t, s, stale, testLogger())

	var repl *shoalv1.Task
	for _, tk := range tasksOf(s, "web") {
		if tk.GetSlot() == 2 && tk.GetMeta().GetId() != "web.2" {
			repl = tk
		}
	}
	if repl == nil {
		t.Fatalf("no replacement for slot 2: %s", brief(tasksOf(s, "web")))
	}
	if repl.GetStatus().GetState() != tsAssigned || repl.GetNodeId() != "n2" {
		t.Fatalf("replacement %s, want assigned to n2 (no task of the service there)", brief([]*shoalv1.Task{repl}))
	}
	// And the placement, as recorded, agrees with the store.
	o.place.lock()
	defer o.place.unlock()
	want := readPlaced(s.View()).Nodes()
	if got := o.place.placed.Nodes(); !maps.EqualFunc(got, want, func(a, b scheduler.Usage) bool {
		return a.Tasks == b.Tasks && maps.Equal(a.ByService, b.ByService)
	}) {
		t.Fatalf("placement after the pass %v, the store says %v", got, want)
	}
}

// TestPlacementAtCreationIsLogged: the tasks the reconciler places are
// logged as the scheduler loop's are ("tasks assigned" with the count,
// "task assigned" with the task and node at debug level), so an operator
// following placements in the log does not lose those placed at creation.
func TestPlacementAtCreationIsLogged(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1"), mkNode("n2"))
	create(t, s, mkService("web", 3, noRestartDelay()))
	var buf bytes.Buffer
	reconcilerPass(t, s, nil, slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err := allAssigned(tasksOf(s, "web"), 3); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, `msg="tasks assigned"`) || !strings.Contains(out, "count=3") {
		t.Errorf("no \"tasks assigned\" line with count=3 in the log:\n%s", out)
	}
	for _, tk := range tasksOf(s, "web") {
		if want := fmt.Sprintf(`msg="task assigned" component=orchestrator loop=reconciler task_id=%s node_id=%s`, tk.GetMeta().GetId(), tk.GetNodeId()); !strings.Contains(out, want) {
			t.Errorf("no %q in the log:\n%s", want, out)
		}
	}
}

// commitClock is a store whose every committed Update takes a minute on
// the orchestrator's clock.
type commitClock struct {
	*raftstore.Store
	at time.Time
}

func (c *commitClock) now() time.Time { return c.at }

func (c *commitClock) Update(ctx context.Context, fn func(raftstore.WriteTx) error) (uint64, error) {
	index, err := c.Store.Update(ctx, fn)
	c.at = c.at.Add(time.Minute)
	return index, err
}

// TestPlacementAtCreationMetricSpansTheCommit: the placement histogram
// (shoal_scheduler_placement_seconds) times the scheduler loop's batches
// from their start to their commit; the reconciler's placements are timed
// the same way, not as the scheduling arithmetic alone, or the histogram
// would mix two measures and seem to improve as placement moved to
// creation.
func TestPlacementAtCreationMetricSpansTheCommit(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1"), mkNode("n2"))
	create(t, s, mkService("web", 3, noRestartDelay()))
	reg := prometheus.NewRegistry()
	clk := &commitClock{Store: s, at: t0}
	o := newOrchestrator(clk, testLogger()).WithMetrics(metrics.NewManager(reg))
	o.now = clk.now
	r := newReconciler(o)
	r.resync()
	if _, err := r.pass(context.Background(), t0); err != nil {
		t.Fatal(err)
	}
	if err := allAssigned(tasksOf(s, "web"), 3); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "shoal_scheduler_placement_seconds":
			h := mf.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != 1 || h.GetSampleSum() < time.Minute.Seconds() {
				t.Errorf("placement histogram: %d samples, sum %.3fs; want 1 spanning the commit (a minute)", h.GetSampleCount(), h.GetSampleSum())
			}
		case "shoal_scheduler_placed_tasks_total":
			if v := mf.GetMetric()[0].GetCounter().GetValue(); v != 3 {
				t.Errorf("placed tasks counted %v, want 3", v)
			}
		}
	}
}

// flakyStore fails the first Update: before (conflict: the pass's
// transaction is run and thrown away, then between changes the store, and
// the Update reports a version conflict) or after its commit (unknown
// outcome: committed, and an error is returned).
type flakyStore struct {
	*raftstore.Store
	conflict bool
	between  func()
	failed   bool
}

func (f *flakyStore) Update(ctx context.Context, fn func(raftstore.WriteTx) error) (uint64, error) {
	if f.failed {
		return f.Store.Update(ctx, fn)
	}
	f.failed = true
	if !f.conflict {
		if _, err := f.Store.Update(ctx, fn); err != nil {
			return 0, err
		}
		return 0, errors.New("timed out waiting for the commit")
	}
	abort := errors.New("thrown away")
	if _, err := f.Store.Update(ctx, func(tx raftstore.WriteTx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return abort
	}); !errors.Is(err, abort) {
		return 0, fmt.Errorf("first attempt: %v", err)
	}
	if f.between != nil {
		f.between()
	}
	return 0, fmt.Errorf("task %q: %w", "x", raftstore.ErrVersionConflict)
}

// checkPlaced fails unless placed counts what the store holds.
func checkPlaced(t *testing.T, s *raftstore.Store, placed *scheduler.Placed) {
	t.Helper()
	if placed == nil {
		t.Fatal("no placement kept after a committed pass")
	}
	want := readPlaced(s.View()).Nodes()
	if got := placed.Nodes(); !maps.EqualFunc(got, want, func(a, b scheduler.Usage) bool {
		return a.Tasks == b.Tasks && a.MemoryBytes == b.MemoryBytes && maps.Equal(a.ByService, b.ByService)
	}) {
		t.Fatalf("placement %v, the store says %v", got, want)
	}
}

// TestPlacementAtCreationOnConflictRetry: a pass that meets a version
// conflict is computed again, placement included, from what the store
// holds then (n1, where the first attempt placed, was drained meanwhile),
// and the placement records only what the retry committed — whether it
// was kept from before the pass or read by it.
func TestPlacementAtCreationOnConflictRetry(t *testing.T) {
	for _, kept := range []bool{true, false} {
		t.Run(fmt.Sprintf("kept=%v", kept), func(t *testing.T) {
			s := openStore(t)
			create(t, s, mkNode("n1"), mkNode("n2"))
			create(t, s, mkService("web", 1, noRestartDelay()))
			f := &flakyStore{Store: s, conflict: true, between: func() {
				changeNode(t, s, "n1", func(n *shoalv1.Node) { n.Spec.Availability = shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN })
			}}
			o := newOrchestrator(f, testLogger())
			o.now = func() time.Time { return t0 }
			if kept {
				o.place.placed = readPlaced(s.View())
			}
			r := newReconciler(o)
			r.resync()
			if _, err := r.pass(context.Background(), t0); err != nil {
				t.Fatal(err)
			}
			if !f.failed {
				t.Fatal("the first attempt did not run")
			}
			ts := tasksOf(s, "web")
			if len(ts) != 1 || ts[0].GetNodeId() != "n2" || ts[0].GetStatus().GetState() != tsAssigned {
				t.Fatalf("tasks %s, want one assigned to n2 (n1 drained before the retry)", brief(ts))
			}
			checkPlaced(t, s, o.place.placed)
		})
	}
}

// TestPlacementAtCreationUnknownOutcome: a pass whose write may or may not
// have committed drops the placement (the next placement reads the store)
// rather than keep one that misses, or counts, the pass's tasks.
func TestPlacementAtCreationUnknownOutcome(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1"), mkNode("n2"))
	create(t, s, mkService("web", 2, noRestartDelay()))
	o := newOrchestrator(&flakyStore{Store: s}, testLogger())
	o.now = func() time.Time { return t0 }
	o.place.placed = readPlaced(s.View())
	r := newReconciler(o)
	r.resync()
	if _, err := r.pass(context.Background(), t0); err == nil {
		t.Fatal("the pass reported no error")
	}
	if err := allAssigned(tasksOf(s, "web"), 2); err != nil {
		t.Fatal(err) // the write did commit
	}
	if o.place.placed != nil {
		t.Fatal("the placement was kept after a write of unknown outcome")
	}
	// The next pass reads it again, and places nothing more.
	if _, err := r.pass(context.Background(), t0); err != nil {
		t.Fatal(err)
	}
	if n := len(tasksOf(s, "web")); n != 2 {
		t.Fatalf("%d tasks after the next pass, want 2", n)
	}
}

// TestPlacementAtCreationCountsTasksStoppingInTheSameEntry: a stop-first
// rolling update asks the old task to stop and creates its replacement in
// one entry; the old task still runs (its agent has not stopped it), so
// with max_replicas_per_node 1 on the only node the replacement is created
// PENDING, not placed beside it — as the scheduler loop, which counts a
// task on its node until it ends, would have left it. Start-first too.
func TestPlacementAtCreationCountsTasksStoppingInTheSameEntry(t *testing.T) {
	for _, order := range []string{"stop-first", "start-first"} {
		t.Run(order, func(t *testing.T) {
			s := openStore(t)
			create(t, s, mkNode("n1"))
			create(t, s, mkService("web", 1, noRestartDelay(), specVersion(2), func(svc *shoalv1.Service) {
				svc.Spec.Task.Placement.MaxReplicasPerNode = 1
				svc.Spec.Update = &shoalv1.UpdateConfig{Parallelism: 1, Order: order}
			}))
			create(t, s, mkTask("web.old", "web", 1, version(1)))
			reconcilerPass(t, s, nil, testLogger())
			var old, repl *shoalv1.Task
			for _, tk := range tasksOf(s, "web") {
				if tk.GetMeta().GetId() == "web.old" {
					old = tk
				} else {
					repl = tk
				}
			}
			if repl == nil {
				t.Fatalf("no replacement created: %s", brief(tasksOf(s, "web")))
			}
			if old.GetStatus().GetState() != tsRunning {
				t.Fatalf("old task %s, want still running", brief([]*shoalv1.Task{old}))
			}
			if repl.GetNodeId() != "" || repl.GetStatus().GetState() != tsPending {
				t.Fatalf("replacement %s placed beside the running old task (max 1 per node)", brief([]*shoalv1.Task{repl}))
			}
		})
	}
}

// TestPlacementAtCreationGlobalStaysOnItsNode: a global service's tasks
// are created on their own node: placed there (ASSIGNED) when it has room,
// and otherwise created PENDING still bound to it — never moved to another
// node that has room — for the scheduler loop to record why.
func TestPlacementAtCreationGlobalStaysOnItsNode(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1", memory(1<<30)), mkNode("n2", memory(1<<30)), mkNode("n3", memory(1<<30)))
	create(t, s, mkService("other", 1, noRestartDelay()))
	create(t, s, mkTask("other.1", "other", 1, onNode("n1"), reserve(512<<20)))
	create(t, s, mkService("agent", 0, noRestartDelay(), global(), func(svc *shoalv1.Service) {
		svc.Spec.Task.Resources = &shoalv1.ResourceRequirements{Reservations: &shoalv1.Resources{MemoryBytes: 768 << 20}}
	}))
	reconcilerPass(t, s, nil, testLogger())
	byNode := map[string]*shoalv1.Task{}
	for _, tk := range tasksOf(s, "agent") {
		if byNode[tk.GetNodeId()] != nil {
			t.Fatalf("two tasks on %s: %s", tk.GetNodeId(), brief(tasksOf(s, "agent")))
		}
		byNode[tk.GetNodeId()] = tk
	}
	if len(byNode) != 3 {
		t.Fatalf("tasks %s, want one bound to each node", brief(tasksOf(s, "agent")))
	}
	for _, n := range []string{"n2", "n3"} {
		if byNode[n].GetStatus().GetState() != tsAssigned {
			t.Errorf("task on %s: %s, want assigned", n, brief([]*shoalv1.Task{byNode[n]}))
		}
	}
	if byNode["n1"].GetStatus().GetState() != tsPending {
		t.Errorf("task on n1 (512 MiB free, 768 asked): %s, want pending", brief([]*shoalv1.Task{byNode["n1"]}))
	}
}

// TestNewTasksQueueBehindWaitingReservations: while the scheduler loop
// holds a task that reserves memory and fits nowhere, a new task that
// reserves CPU or memory is not placed at creation — it is created PENDING
// and placed by the scheduler loop, in the same order as the waiting ones,
// rather than taking freed capacity ahead of them. A new task that
// reserves nothing is still placed at creation, and once nothing waits,
// reserving tasks are placed at creation again.
func TestNewTasksQueueBehindWaitingReservations(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1", memory(1<<30)))
	events := taskEvents(t, s)
	o := startOrchestrator(t, s)
	waiting := func() bool {
		o.place.lock()
		defer o.place.unlock()
		return o.place.waiting
	}
	mem := func(bytes int64) svcOpt {
		return func(svc *shoalv1.Service) {
			svc.Spec.Task.Resources = &shoalv1.ResourceRequirements{Reservations: &shoalv1.Resources{MemoryBytes: bytes}}
		}
	}
	firstEvent := func(svc string) string {
		t.Helper()
		var first string
		eventually(t, "the first event of "+svc+"'s task", func() error {
			ts := tasksOf(s, svc)
			if len(ts) != 1 {
				return fmt.Errorf("%d tasks", len(ts))
			}
			evs := events()[ts[0].GetMeta().GetId()]
			if len(evs) == 0 {
				return fmt.Errorf("no event yet")
			}
			first = evs[0]
			return nil
		})
		return first
	}
	create(t, s, mkService("a", 1, noRestartDelay(), mem(768<<20)))
	eventually(t, "a placed", func() error { return allAssigned(tasksOf(s, "a"), 1) })
	create(t, s, mkService("b", 1, noRestartDelay(), mem(512<<20)))
	eventually(t, "b waiting with its reason", func() error {
		ts := tasksOf(s, "b")
		if len(ts) != 1 || ts[0].GetStatus().GetMessage() == msgPending || ts[0].GetNodeId() != "" {
			return fmt.Errorf("b: %s", brief(ts))
		}
		if !waiting() {
			return fmt.Errorf("the scheduler loop does not report b waiting yet")
		}
		return nil
	})
	create(t, s, mkService("c", 1, noRestartDelay(), mem(128<<20)), mkService("d", 1, noRestartDelay()))
	eventually(t, "c and d placed", func() error {
		if err := allAssigned(tasksOf(s, "c"), 1); err != nil {
			return err
		}
		return allAssigned(tasksOf(s, "d"), 1)
	})
	create := shoalv1.WatchAction_WATCH_ACTION_CREATE.String()
	if got, want := firstEvent("c"), create+" pending "; got != want {
		t.Errorf("c (reserves memory while b waits): first event %q, want %q", got, want)
	}
	if got, want := firstEvent("d"), create+" assigned n1"; got != want {
		t.Errorf("d (reserves nothing): first event %q, want %q", got, want)
	}
	// Nothing waits once b is gone: a reserving task is placed at creation.
	write(t, s, func(tx raftstore.WriteTx) error { return tx.Delete(raftstore.KindService, "b", 0) })
	eventually(t, "b's task gone and the scheduler loop's round over", func() error {
		if ts := liveOf(tasksOf(s, "b")); len(ts) != 0 {
			return fmt.Errorf("b: %s", brief(ts))
		}
		if waiting() {
			return fmt.Errorf("the scheduler loop still reports a waiting reservation")
		}
		return nil
	})
	writeService := func(svc *shoalv1.Service) {
		write(t, s, func(tx raftstore.WriteTx) error { return tx.Create(svc) })
	}
	writeService(mkService("e", 1, noRestartDelay(), mem(64<<20)))
	if got, want := firstEvent("e"), create+" assigned n1"; got != want {
		t.Errorf("e (reserves memory, nothing waits): first event %q, want %q", got, want)
	}
}
