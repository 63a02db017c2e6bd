package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

func createTask(t *testing.T, s *raftstore.Store, id, node string) {
	t.Helper()
	_, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		return tx.Create(task(id, node, shoalv1.TaskState_TASK_STATE_ASSIGNED))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func taskState(s *raftstore.Store, id string) shoalv1.TaskState {
	tk, _ := raftstore.Get[*shoalv1.Task](s.View(), id)
	return tk.GetStatus().GetState()
}

func update(node, id string, state shoalv1.TaskState) statusUpdate {
	return statusUpdate{nodeID: node, upd: &shoalv1.TaskStatusUpdate{TaskId: id, Status: &shoalv1.TaskStatus{State: state}}}
}

// A forged update from another node for the same task, arriving in the
// same batch after the real one, must not replace it: keyed by task alone,
// the forged one took the real one's place, was refused, and the real
// report was lost for good.
func TestForgedStatusDoesNotReplaceRealOne(t *testing.T) {
	s := openStore(t)
	createTask(t, s, "t1", "n1")
	d := New(Config{Store: s, Logger: slog.New(slog.DiscardHandler), StatusFlush: time.Second})

	// Both are queued before the writer starts, so they land in one batch
	// (the flush timer starts with the first).
	in := make(chan statusUpdate, 2)
	in <- update("n1", "t1", shoalv1.TaskState_TASK_STATE_ACCEPTED)
	in <- update("n2", "t1", shoalv1.TaskState_TASK_STATE_FAILED)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.writeStatuses(ctx, in) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("writeStatuses: %v", err)
		}
	})
	poll(t, "the real update is recorded", func() bool { return taskState(s, "t1") == shoalv1.TaskState_TASK_STATE_ACCEPTED })
}

// An update for a task assigned to another node is dropped when it
// arrives; the node's own tasks, and tasks this view does not know yet
// (a lagging view after an election), go on to the writer. The drops of
// one message make one log line, however many there are.
func TestReportable(t *testing.T) {
	s := openStore(t)
	createTask(t, s, "mine", "n1")
	createTask(t, s, "theirs", "n2")
	logs := &countingHandler{}
	d := New(Config{Store: s, Logger: slog.New(logs)})
	var ups []*shoalv1.TaskStatusUpdate
	for _, id := range []string{"mine", "theirs", "unknown"} {
		ups = append(ups, update("n1", id, shoalv1.TaskState_TASK_STATE_RUNNING).upd)
	}
	for range 1000 {
		ups = append(ups, update("n1", "theirs", shoalv1.TaskState_TASK_STATE_FAILED).upd)
	}
	var got []string
	for _, u := range d.reportable(s.View(), "n1", ups) {
		got = append(got, u.GetTaskId())
	}
	if want := []string{"mine", "unknown"}; !slices.Equal(got, want) {
		t.Errorf("reportable kept %q, want %q", got, want)
	}
	if n := logs.warns.Load(); n != 1 {
		t.Errorf("%d warnings logged for one message's drops, want 1", n)
	}
}

// countingHandler counts the warnings logged.
type countingHandler struct{ warns atomic.Int32 }

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		h.warns.Add(1)
	}
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

// While a batch is being committed the writer keeps taking updates (the
// sessions do not wait behind the commit), and a task whose ACCEPTED and
// RUNNING both arrive during one commit is written once, RUNNING: the
// commit is the next batch's window. Written synchronously, the writer
// took nothing during a commit, and the two reports, sent apart by a
// flush, were two raft writes.
func TestStatusesCoalesceDuringCommit(t *testing.T) {
	in, batches, free := heldFirstCommit(t, nil)
	send := func(u statusUpdate) { sendWithin(t, in, u) }
	send(update("n1", "t1", shoalv1.TaskState_TASK_STATE_ACCEPTED))
	first := <-batches // now held in its commit
	if len(first) != 1 {
		t.Fatalf("first batch %v, want t1 alone", first)
	}
	send(update("n1", "t2", shoalv1.TaskState_TASK_STATE_ACCEPTED))
	send(update("n1", "t2", shoalv1.TaskState_TASK_STATE_RUNNING))
	send(update("n1", "t1", shoalv1.TaskState_TASK_STATE_RUNNING))
	free()
	wantBatch(t, "second", <-batches, map[string]shoalv1.TaskState{"t1": shoalv1.TaskState_TASK_STATE_RUNNING, "t2": shoalv1.TaskState_TASK_STATE_RUNNING})
}

// A batch whose commit fails is written again together with what arrived
// during the failed commit, an update that arrived meanwhile winning over
// the failed one of the same task.
func TestStatusBatchRetriedAfterFailedCommit(t *testing.T) {
	in, batches, free := heldFirstCommit(t, errors.New("not leader"))
	sendWithin(t, in, update("n1", "t1", shoalv1.TaskState_TASK_STATE_ACCEPTED))
	if first := <-batches; len(first) != 1 { // now held in its commit
		t.Fatalf("first batch %v, want t1 alone", first)
	}
	sendWithin(t, in, update("n1", "t2", shoalv1.TaskState_TASK_STATE_ACCEPTED))
	sendWithin(t, in, update("n1", "t1", shoalv1.TaskState_TASK_STATE_RUNNING))
	free()
	wantBatch(t, "retried", <-batches, map[string]shoalv1.TaskState{"t1": shoalv1.TaskState_TASK_STATE_RUNNING, "t2": shoalv1.TaskState_TASK_STATE_ACCEPTED})
}

// heldFirstCommit runs a status writer whose commits are recorded on
// batches; the first is held until free is called and then returns
// firstErr. in is unbuffered: a send completes only when the writer takes
// it. The writer is stopped (and must end with context.Canceled) at the
// end of the test.
func heldFirstCommit(t *testing.T, firstErr error) (in chan statusUpdate, batches chan map[statusKey]statusUpdate, free func()) {
	t.Helper()
	s := openStore(t)
	d := New(Config{Store: s, Logger: slog.New(slog.DiscardHandler), StatusFlush: time.Millisecond})
	release := make(chan struct{})
	var releaseOnce sync.Once
	free = func() { releaseOnce.Do(func() { close(release) }) }
	batches = make(chan map[statusKey]statusUpdate, 8)
	calls := 0 // the writer's goroutines run one at a time
	d.writeBatch = func(ctx context.Context, b map[statusKey]statusUpdate) error {
		calls++
		batches <- b
		if calls == 1 {
			<-release // the first commit is held
			return firstErr
		}
		return nil
	}
	in = make(chan statusUpdate)
	runWriter(t, d, in, free)
	return in, batches, free
}

// wantBatch fails the test unless batch writes exactly one update per task
// of want, each with its state.
func wantBatch(t *testing.T, name string, batch map[statusKey]statusUpdate, want map[string]shoalv1.TaskState) {
	t.Helper()
	if len(batch) != len(want) {
		t.Fatalf("%s batch has %d updates (%v), want one per task of %v", name, len(batch), batch, want)
	}
	for k, u := range batch {
		if want[k.taskID] != u.upd.GetStatus().GetState() {
			t.Errorf("%s batch writes %s for %s, want %s", name, u.upd.GetStatus().GetState(), k.taskID, want[k.taskID])
		}
	}
}

// sendWithin sends u to the status writer, failing the test when the writer
// does not take it.
func sendWithin(t *testing.T, in chan<- statusUpdate, u statusUpdate) {
	t.Helper()
	select {
	case in <- u:
	case <-time.After(waitFor):
		t.Fatalf("the writer did not take %s of %s while a batch was being committed", u.upd.GetStatus().GetState(), u.upd.GetTaskId())
	}
}

// The writer returns only once its commit in flight has: it used to
// return at once when its ctx ended (leadership lost, shutdown) and leave
// the commit's goroutine running on, past the dispatcher's Run, against a
// store about to be closed.
func TestStatusWriterWaitsForCommitOnShutdown(t *testing.T) {
	s := openStore(t)
	d := New(Config{Store: s, Logger: slog.New(slog.DiscardHandler), StatusFlush: time.Millisecond})
	started := make(chan struct{})
	finish := make(chan struct{})
	var exited atomic.Bool
	d.writeBatch = func(ctx context.Context, b map[statusKey]statusUpdate) error {
		close(started)
		<-finish // a commit slow to notice ctx
		exited.Store(true)
		return ctx.Err()
	}
	in := make(chan statusUpdate)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.writeStatuses(ctx, in) }()
	var finishOnce sync.Once
	t.Cleanup(func() { cancel(); finishOnce.Do(func() { close(finish) }) })
	sendWithin(t, in, update("n1", "t1", shoalv1.TaskState_TASK_STATE_ACCEPTED))
	<-started
	cancel()
	select {
	case <-done:
		t.Fatal("writeStatuses returned while its commit was still running")
	case <-time.After(200 * time.Millisecond): // still waiting for it, as it should
	}
	finishOnce.Do(func() { close(finish) })
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("writeStatuses: %v", err)
	}
	if !exited.Load() {
		t.Error("writeStatuses returned before its commit did")
	}
}

// While a commit is in flight the writer holds at most maxPending updates
// and leaves the rest in its queue, so the sessions wait (as they did
// behind a commit before) instead of the leader's heap growing with
// whatever arrives: updates for tasks the view does not know are let
// through (after an election), and a node sending made-up ids did not
// coalesce with anything.
func TestStatusWriterBoundsPending(t *testing.T) {
	s := openStore(t)
	d := New(Config{Store: s, Logger: slog.New(slog.DiscardHandler), StatusFlush: time.Millisecond})
	d.maxPending = 4
	release := make(chan struct{})
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	batches := make(chan int, 16)
	var calls atomic.Int32
	d.writeBatch = func(ctx context.Context, b map[statusKey]statusUpdate) error {
		batches <- len(b)
		if calls.Add(1) == 1 {
			<-release // the first commit is held
		}
		return nil
	}
	in := make(chan statusUpdate, 16)
	ended := runWriter(t, d, in, free)
	in <- update("n1", "first", shoalv1.TaskState_TASK_STATE_ACCEPTED)
	<-batches // held in its commit
	for i := range 10 {
		in <- update("n1", fmt.Sprintf("made-up-%d", i), shoalv1.TaskState_TASK_STATE_RUNNING)
	}
	poll(t, "the writer takes 4", func() bool { return len(in) <= 6 })
	select {
	case <-time.After(200 * time.Millisecond): // the writer had every chance to take more
	case <-ended:
		t.Fatal("writer ended")
	}
	if n := len(in); n != 6 {
		t.Fatalf("%d updates left in the queue during the commit, want 6 (the writer holds at most 4)", n)
	}
	free()
	total := 0
	for total < 10 {
		total += <-batches
	}
}

// runWriter runs d's status writer on in until the end of the test, when
// it is stopped (free releases a commit it may be holding) and must end
// with context.Canceled. ended is closed when the writer returns.
func runWriter(t *testing.T, d *Dispatcher, in chan statusUpdate, free func()) (ended <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	endedc := make(chan struct{})
	var err error
	go func() { err = d.writeStatuses(ctx, in); close(endedc) }()
	t.Cleanup(func() {
		cancel()
		free()
		<-endedc
		if !errors.Is(err, context.Canceled) {
			t.Errorf("writeStatuses: %v", err)
		}
	})
	return endedc
}

// A status write changes the task's status and nothing else: the stored
// task's new version shares its spec and networks with the previous one
// (no whole-task copy is built, sent or stored), and a report the state
// machine refuses writes nothing.
func TestStatusWriteSharesTheRestOfTheTask(t *testing.T) {
	s := openStore(t)
	_, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		tk := task("t1", "n1", shoalv1.TaskState_TASK_STATE_ASSIGNED)
		tk.Spec = &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:latest"}}
		tk.Networks = []*shoalv1.NetworkAttachment{{NetworkId: "net1", Address: "10.220.3.7/24"}}
		return tx.Create(tk)
	})
	if err != nil {
		t.Fatal(err)
	}
	prev, _ := raftstore.Get[*shoalv1.Task](s.View(), "t1")
	d := New(Config{Store: s, Logger: slog.New(slog.DiscardHandler)})
	batch := map[statusKey]statusUpdate{
		{"n1", "t1"}: update("n1", "t1", shoalv1.TaskState_TASK_STATE_RUNNING),
	}
	if err := d.applyStatuses(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	got, _ := raftstore.Get[*shoalv1.Task](s.View(), "t1")
	if got.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING || got.GetMeta().GetVersion() <= prev.GetMeta().GetVersion() {
		t.Fatalf("stored %v", got)
	}
	if got.Spec != prev.Spec || &got.Networks[0] != &prev.Networks[0] {
		t.Fatal("the status write copied the whole task")
	}
	if prev.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_ASSIGNED {
		t.Fatal("the previous version changed")
	}
	index := s.AppliedIndex()
	back := map[statusKey]statusUpdate{{"n1", "t1"}: update("n1", "t1", shoalv1.TaskState_TASK_STATE_ACCEPTED)}
	if err := d.applyStatuses(context.Background(), back); err != nil {
		t.Fatal(err)
	}
	if s.AppliedIndex() != index {
		t.Fatal("a refused report was written")
	}
}
