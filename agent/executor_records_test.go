package agent

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// recordingDB wraps the real task database: it records what was written
// (only writes that succeeded), can fail writes on demand, and can hold a
// task write at a gate.
type recordingDB struct {
	taskStore

	mu         sync.Mutex // guards everything below
	tasks      map[string]bool
	statuses   map[string][]*shoalv1.TaskStatus // every status written, in order
	attempts   map[string][]shoalv1.TaskState   // every status write tried
	violations []string
	failTasks  bool
	failStatus bool
	gate       chan struct{} // if set, putTasks waits for it to close
	entered    chan struct{} // closed when putTasks first reaches the gate
}

func newRecordingDB(inner taskStore) *recordingDB {
	return &recordingDB{taskStore: inner, tasks: map[string]bool{}, statuses: map[string][]*shoalv1.TaskStatus{},
		attempts: map[string][]shoalv1.TaskState{}, entered: make(chan struct{})}
}

var errDiskFull = errors.New("disk full (test)")

func (d *recordingDB) putTasks(ws []taskWrite) error {
	d.mu.Lock()
	gate, fail := d.gate, d.failTasks
	select {
	case <-d.entered:
	default:
		close(d.entered)
	}
	d.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if fail {
		return errDiskFull
	}
	if err := d.taskStore.putTasks(ws); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range ws {
		d.tasks[w.task.GetMeta().GetId()] = true
		if w.status != nil {
			d.statuses[w.task.GetMeta().GetId()] = append(d.statuses[w.task.GetMeta().GetId()], proto.Clone(w.status).(*shoalv1.TaskStatus))
		}
	}
	return nil
}

func (d *recordingDB) put(id string, t *shoalv1.Task, st *shoalv1.TaskStatus) error {
	d.mu.Lock()
	d.attempts[id] = append(d.attempts[id], st.GetState())
	if !d.tasks[id] && t == nil {
		d.violations = append(d.violations, "status "+st.GetState().String()+" of "+id+" written before the task's record")
	}
	fail := d.failStatus
	d.mu.Unlock()
	if fail {
		return errDiskFull
	}
	if err := d.taskStore.put(id, t, st); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.statuses[id] = append(d.statuses[id], proto.Clone(st).(*shoalv1.TaskStatus))
	return nil
}

func (d *recordingDB) set(f func(d *recordingDB)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(d)
}

func (d *recordingDB) tried(id string, state shoalv1.TaskState) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.attempts[id] {
		if s == state {
			return true
		}
	}
	return false
}

// written says whether st was written for id.
func (d *recordingDB) written(id string, st *shoalv1.TaskStatus) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range d.statuses[id] {
		if proto.Equal(w, st) {
			return true
		}
	}
	return false
}

// poll waits for cond with a deadline (not a timing assertion).
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// A task's record is written before its controller starts: while the
// record's write is held at a gate, no controller of the task exists.
// Every status handed to a session was written first.
func TestExecutorRecordsTaskBeforeItsController(t *testing.T) {
	var db *recordingDB
	gate := make(chan struct{})
	env := newExecEnvWrapped(t, func(inner taskStore) taskStore {
		db = newRecordingDB(inner)
		db.gate = gate
		return db
	})
	assigned := make(chan struct{})
	go func() {
		env.ex.Assign(true, []*shoalv1.Task{running("t1")}, nil)
		close(assigned)
	}()
	<-db.entered
	// The record's write is held at the gate. Controllers are started
	// under e.mu, before or after that write but never during it, so a
	// controller started first is already in e.ctls now: no waiting for it
	// to show itself.
	env.ex.mu.Lock()
	_, started := env.ex.ctls["t1"]
	env.ex.mu.Unlock()
	if started {
		t.Error("t1's controller was started before its record was written")
	}
	close(gate)
	<-assigned
	var reported []*shoalv1.TaskStatusUpdate
	poll(t, "t1 running and reported", func() bool {
		reported = append(reported, env.ex.TakeUpdates(false)...)
		n := len(reported)
		return n > 0 && reported[n-1].GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_RUNNING
	})
	db.mu.Lock()
	violations := db.violations
	db.mu.Unlock()
	for _, v := range violations {
		t.Error(v)
	}
	for _, u := range reported {
		if !db.written(u.GetTaskId(), u.GetStatus()) {
			t.Errorf("reported %s of %s without having written it", u.GetStatus().GetState(), u.GetTaskId())
		}
	}
}

// A status whose write fails is not reported; once writes work again it
// is written and reported.
func TestExecutorReportsNoUnwrittenStatus(t *testing.T) {
	var db *recordingDB
	env := newExecEnvWrapped(t, func(inner taskStore) taskStore {
		db = newRecordingDB(inner)
		db.failStatus = true
		return db
	})
	env.ex.Assign(true, []*shoalv1.Task{running("t1")}, nil)
	poll(t, "the controller tried to record RUNNING", func() bool { return db.tried("t1", shoalv1.TaskState_TASK_STATE_RUNNING) })
	if ups := env.ex.TakeUpdates(true); len(ups) != 0 {
		t.Fatalf("reported statuses whose write failed: %v", ups)
	}
	db.set(func(d *recordingDB) { d.failStatus = false })
	var last *shoalv1.TaskStatusUpdate
	poll(t, "RUNNING written and reported once writes work", func() bool {
		for _, u := range env.ex.TakeUpdates(false) {
			last = u
		}
		return last.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_RUNNING
	})
	if !db.written("t1", last.GetStatus()) {
		t.Errorf("reported %v without having written it", last.GetStatus())
	}
}

// A running task whose statuses could not be written (disk full: when
// image GC matters most) still holds its image: GC must not collect the
// image from under the container because the status naming it is not
// reported yet.
func TestExecutorImageInUseWhileStatusUnwritten(t *testing.T) {
	var db *recordingDB
	env := newExecEnvWrapped(t, func(inner taskStore) taskStore {
		db = newRecordingDB(inner)
		db.failStatus = true
		return db
	})
	env.ex.Assign(true, []*shoalv1.Task{running("t1")}, nil)
	poll(t, "the controller tried to record RUNNING", func() bool { return db.tried("t1", shoalv1.TaskState_TASK_STATE_RUNNING) })
	if _, ok := env.rt.Spec("t1"); !ok {
		t.Fatal("t1's container was not created")
	}
	if !env.ex.ImageInUse("sha256:aaa") {
		t.Error("the image of a running task is not in use while its status is unwritten")
	}
}

// A task whose record cannot be written is not started (nothing could
// report on it truthfully after a restart); it starts once the write
// works, and a set that drops it meanwhile drops it for good.
func TestExecutorStartsNoTaskItCannotRecord(t *testing.T) {
	var db *recordingDB
	env := newExecEnvWrapped(t, func(inner taskStore) taskStore {
		db = newRecordingDB(inner)
		db.failTasks = true
		return db
	})
	env.ex.Assign(true, []*shoalv1.Task{running("t1"), running("gone")}, nil)
	// Assign is synchronous: whatever it started is held now.
	if tasks := env.ex.Tasks(); len(tasks) != 0 {
		t.Fatalf("started %d tasks without their records", len(tasks))
	}
	env.ex.Assign(false, nil, []string{"gone"})
	db.set(func(d *recordingDB) { d.failTasks = false })
	env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_RUNNING)
	if _, ok := env.rt.Spec("gone"); ok {
		t.Error("a task removed while it waited for its record was started")
	}
	all, err := env.ex.db.all()
	if err != nil || len(all) != 1 {
		t.Errorf("records %v (%v), want t1's only", all, err)
	}
}

// An assignment with an invalid task id is ignored before any path is
// built from it: ".." would make tasks/.. (the data dir itself) the task's
// directory, and its release would remove the agent's whole state.
func TestExecutorIgnoresInvalidTaskIDs(t *testing.T) {
	env := newExecEnv(t)
	var bad []*shoalv1.Task
	for _, id := range []string{"..", ".", "", "a/b", "../x", ".hidden", "-x", string(make([]byte, 129))} {
		bad = append(bad, running(id))
	}
	env.ex.Assign(true, append(bad, running("ok")), nil)
	// Assign is synchronous: whatever it accepted is held now.
	if tasks := env.ex.Tasks(); len(tasks) != 1 || tasks[0].GetMeta().GetId() != "ok" {
		t.Fatalf("held %d tasks, want only %q", len(tasks), "ok")
	}
	env.waitStatus("ok", shoalv1.TaskState_TASK_STATE_RUNNING)
	if ups := env.ex.TakeUpdates(true); len(ups) != 1 {
		t.Errorf("%d statuses reported, want ok's only: %v", len(ups), ups)
	}
	for _, p := range []string{"state.db", "tasks", "logs"} {
		if _, err := os.Stat(filepath.Join(env.dir, p)); err != nil {
			t.Errorf("agent state damaged: %v", err)
		}
	}
}

// A stored record with an invalid id (written by an agent that did not
// check ids) is not re-adopted: re-adoption builds paths from the id.
func TestExecutorIgnoresStoredInvalidTaskIDs(t *testing.T) {
	env := newExecEnv(t)
	env.stop()
	db, err := openTaskDB(env.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"..", "ok"} {
		st := &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_FAILED}
		if err := db.putTasks([]taskWrite{{task: running(id), status: st}}); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	env.start()
	if tasks := env.ex.Tasks(); len(tasks) != 1 || tasks[0].GetMeta().GetId() != "ok" {
		t.Fatalf("re-adopted %v, want only %q", tasks, "ok")
	}
	if ups := env.ex.TakeUpdates(true); len(ups) != 1 || ups[0].GetTaskId() != "ok" {
		t.Errorf("reported %v, want ok's status only", ups)
	}
}
