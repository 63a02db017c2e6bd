package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/agent/image"
	"github.com/shoal-dev/shoal/agent/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/specrules"
)

// ExecutorConfig configures an Executor.
type ExecutorConfig struct {
	// Dir holds the agent's state: state.db, tasks/<id>/ (rootfs, upper,
	// work) and logs/<id>.log.
	Dir     string
	Runtime runtime.Runtime
	Images  Images
	// Network gives tasks their network namespace; nil leaves each task
	// with a private namespace holding only loopback.
	Network Network
	// Overlay attaches tasks to their overlay networks (after Network
	// gave them a namespace); nil: Task.networks are ignored.
	Overlay Overlay
	// Discovery serves DNS and programs VIPs for tasks on overlay
	// networks (after Overlay.Attach); nil: no service discovery, and
	// the task keeps the image's /etc/resolv.conf.
	Discovery Discovery
	// Withdrawal, when set, says when every node has stopped sending new
	// connections to a stopping task (endpointdrain.go); nil: the drain
	// is EndpointDrain alone.
	Withdrawal EndpointWithdrawal
	// HostResolvConf is the node's resolv.conf whose search domains a
	// task on an overlay network inherits (default /etc/resolv.conf).
	HostResolvConf string
	// Pull is passed to image pulls (credentials, insecure registries).
	Pull image.PullOptions
	// PullTimeout bounds one image pull (default 5 min).
	PullTimeout time.Duration
	// NodeMemory is the node's memory: a task whose limit exceeds it is
	// rejected instead of being started.
	NodeMemory int64
	// MaxConcurrentStarts bounds container starts in flight (default
	// 2 × CPUs): beyond that, starts only queue for the CPU anyway.
	MaxConcurrentStarts int
	// OnRemoved is called after a removed task's resources and records
	// are gone (the node uses it to garbage-collect images).
	OnRemoved func(taskID string)
	// OnStatus is called after a task's observed status was recorded and
	// queued for the managers (outside the executor's locks; the daemon
	// gossips endpoint hints from it). It must not block.
	OnStatus func(t *shoalv1.Task, st *shoalv1.TaskStatus)
	Logger   *slog.Logger

	// NodeDataDir is the node's data dir (keys, raft, images), which no
	// bind mount of a task may reach; default Dir.
	NodeDataDir string
}

// Executor drives the tasks assigned to this node: one controller
// goroutine per task owns that task's state machine (ACCEPTED → PREPARING
// → STARTING → RUNNING → COMPLETE/FAILED/SHUTDOWN, or REJECTED). Observed
// statuses are written to the local task database before they are
// reported, and collected for the session to send in batches.
type Executor struct {
	cfg ExecutorConfig
	log *slog.Logger
	db  taskStore

	startSem chan struct{}
	pulls    singleflight
	// mount and unmount make a task's rootfs (real overlayfs; unit tests
	// of the state machine swap them out).
	mount   func(lower []string, upper, work, target string) error
	unmount func(target string) error

	// assignMu serialises Assign calls (the session's, RemoveAll's and the
	// write retries'), so that a set is planned, recorded and applied as
	// one step while e.mu is not held across the write.
	assignMu sync.Mutex
	// statusMu serialises status writes with their retries, so that an
	// older status being retried can never overwrite a newer one. Taken
	// before e.mu, never after it.
	statusMu sync.Mutex

	mu sync.Mutex // guards everything below
	// ctx is Run's context; nil until Run starts.
	ctx  context.Context
	ctls map[string]*taskCtl
	// statuses are the last observed statuses of held tasks; dirty marks
	// those not yet handed to a session.
	statuses map[string]*shoalv1.TaskStatus
	dirty    map[string]bool
	// adopted holds tasks read from the database until Run starts them.
	adopted map[string]storedTask
	// early holds assignments that arrived before Run started.
	early  []assignment
	notify chan struct{} // cap 1: dirty became non-empty
	// unrecorded are assigned tasks whose record could not be written:
	// they are not started until it is. unwritten are statuses whose
	// write failed: they are not reported until it succeeds. retry is the
	// pending retry of both (nil if none), after retryBackoff.
	unrecorded   map[string]*shoalv1.Task
	unwritten    map[string]*shoalv1.TaskStatus
	retry        *time.Timer
	retryBackoff time.Duration
}

// taskStore is what the executor needs of the local task database
// (taskDB); tests wrap it to fail or to record writes.
type taskStore interface {
	putTasks(ws []taskWrite) error
	put(id string, t *shoalv1.Task, st *shoalv1.TaskStatus) error
	delete(id string) error
	all() (map[string]storedTask, error)
	Close() error
}

type assignment struct {
	full    bool
	upsert  []*shoalv1.Task
	removed []string
}

// NewExecutor opens the agent's state in cfg.Dir.
func NewExecutor(cfg ExecutorConfig) (*Executor, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PullTimeout <= 0 {
		cfg.PullTimeout = 5 * time.Minute
	}
	if cfg.MaxConcurrentStarts <= 0 {
		cfg.MaxConcurrentStarts = 2 * goruntime.NumCPU()
	}
	if cfg.Runtime == nil || cfg.Images == nil {
		return nil, errors.New("executor: a runtime and an image store are required")
	}
	for _, d := range []string{"tasks", "logs"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	db, err := openTaskDB(cfg.Dir)
	if err != nil {
		return nil, err
	}
	stored, err := db.all()
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("reading agent state: %w", err)
	}
	e := &Executor{cfg: cfg, log: cfg.Logger.With("component", "executor"), db: db,
		startSem: make(chan struct{}, cfg.MaxConcurrentStarts),
		ctls:     map[string]*taskCtl{}, statuses: map[string]*shoalv1.TaskStatus{}, dirty: map[string]bool{},
		adopted: stored, notify: make(chan struct{}, 1), mount: runtime.MountOverlay, unmount: runtime.Unmount,
		unrecorded: map[string]*shoalv1.Task{}, unwritten: map[string]*shoalv1.TaskStatus{}}
	for id := range stored {
		if specrules.TaskID(id) != nil {
			// Never built into a path: recorded by an agent that did not
			// check ids yet.
			e.log.Warn("ignoring a stored task with an invalid id", "task_id", clip(id))
			delete(stored, id)
		}
	}
	for id, s := range stored {
		e.statuses[id] = s.status
		e.dirty[id] = true
	}
	return e, nil
}

// Run re-adopts the tasks found in the local state and runs controllers
// until ctx ends. Ending leaves containers running: a restarted agent
// picks them up again.
func (e *Executor) Run(ctx context.Context) error {
	e.mu.Lock()
	e.ctx = ctx
	for id, s := range e.adopted {
		e.log.Info("re-adopting task", "task_id", id, "state", s.status.GetState())
		e.startCtlLocked(s.task, s.status)
	}
	e.adopted = nil
	early := e.early
	e.early = nil
	e.mu.Unlock()
	for _, a := range early {
		e.Assign(a.full, a.upsert, a.removed)
	}
	e.removeStrays(ctx)
	<-ctx.Done()
	e.mu.Lock()
	ctls := make([]*taskCtl, 0, len(e.ctls))
	for _, c := range e.ctls {
		ctls = append(ctls, c)
	}
	e.mu.Unlock()
	for _, c := range ctls {
		<-c.done
	}
	e.mu.Lock()
	if e.retry != nil {
		e.retry.Stop()
		e.retry = nil
	}
	e.mu.Unlock()
	return e.db.Close()
}

// RemoveAll stops and removes every task this node holds (as if the
// managers had deleted them all) and waits until they are gone or ctx ends.
// For a node removed from the cluster: no manager will ever tell it to
// stop its containers, and their replacements already run elsewhere.
func (e *Executor) RemoveAll(ctx context.Context) error {
	e.Assign(true, nil, nil)
	for {
		e.mu.Lock()
		left := len(e.ctls)
		e.mu.Unlock()
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d tasks still held: %w", left, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// removeStrays removes containers the runtime has but no task record
// names: left by a crash between a record's deletion and the container's
// removal (or by a release that failed for good).
func (e *Executor) removeStrays(ctx context.Context) {
	states, err := e.cfg.Runtime.List(ctx)
	if err != nil {
		e.log.Warn("listing containers", "err", err)
		return
	}
	for _, st := range states {
		e.mu.Lock()
		_, held := e.ctls[st.ID]
		e.mu.Unlock()
		if held {
			continue
		}
		e.log.Warn("removing a container no task record names", "task_id", st.ID, "status", st.Status)
		if err := e.cfg.Runtime.Remove(ctx, st.ID); err != nil {
			e.log.Warn("removing stray container", "task_id", st.ID, "err", err)
		}
	}
}

// Assign applies the dispatcher's assignments: full replaces the held set
// (tasks not in it are stopped and removed), otherwise a diff. It runs on
// the session's receive loop: it records and wakes; its one write is the
// records of new and changed tasks (one transaction, one fsync).
//
// A new task's record is written before its controller starts, so no
// status is ever reported for a task that a restarted agent would not
// know. A task whose record cannot be written is not started; it is tried
// again after a back-off for as long as it stays assigned.
//
// Task ids are checked before anything else: an id is built into paths
// (tasks/<id>, logs/<id>.log) that are later removed, so "..", "a/b" or
// "" would reach outside them. An assignment with an invalid id is logged
// and ignored, not reported: a report is keyed by the id, and managers
// never make such ids, so whoever sent it is broken or hostile and gains
// nothing from an answer.
func (e *Executor) Assign(full bool, upsert []*shoalv1.Task, removed []string) {
	e.assignMu.Lock()
	defer e.assignMu.Unlock()
	plan, ok := e.planAssign(full, upsert, removed)
	if !ok {
		return
	}
	var writes []taskWrite
	for _, n := range plan.start {
		writes = append(writes, taskWrite{task: n.task, status: n.lost})
	}
	for _, t := range plan.changed {
		writes = append(writes, taskWrite{task: t})
	}
	recorded := true
	if len(writes) > 0 {
		if err := e.db.putTasks(writes); err != nil {
			e.log.Error("recording tasks; new ones wait until they are recorded", "count", len(writes), "err", err)
			recorded = false
		}
	}
	e.applyAssign(plan, recorded)
}

// assignPlan is what one Assign does, decided under e.mu, applied under
// e.mu again after the records are written.
type assignPlan struct {
	start   []newTask       // not held yet: record, then start
	changed []*shoalv1.Task // held, changed in a way the controller acts on: record
	held    []*shoalv1.Task // every upsert of a held task (its newest copy)
	remove  []string
}

type newTask struct {
	task   *shoalv1.Task
	status *shoalv1.TaskStatus // the controller's initial status
	lost   *shoalv1.TaskStatus // non-nil: report this at once (recorded with the task)
}

func (e *Executor) planAssign(full bool, upsert []*shoalv1.Task, removed []string) (assignPlan, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctx == nil {
		e.early = append(e.early, assignment{full, upsert, removed})
		return assignPlan{}, false
	}
	if e.ctx.Err() != nil {
		return assignPlan{}, false
	}
	valid := make([]*shoalv1.Task, 0, len(upsert))
	for _, t := range upsert {
		if id := t.GetMeta().GetId(); specrules.TaskID(id) != nil {
			e.log.Warn("ignoring an assignment with an invalid task id", "task_id", clip(id), "service_id", clip(t.GetServiceId()))
			continue
		}
		valid = append(valid, t)
	}
	upsert = valid
	// Tasks still waiting for their record come first, unless this set
	// drops them or carries a newer copy.
	if len(e.unrecorded) > 0 {
		if !full {
			for _, id := range removed {
				delete(e.unrecorded, id)
			}
			for _, t := range upsert {
				delete(e.unrecorded, t.GetMeta().GetId())
			}
			pending := make([]*shoalv1.Task, 0, len(e.unrecorded)+len(upsert))
			for _, t := range e.unrecorded {
				pending = append(pending, t)
			}
			upsert = append(pending, upsert...)
		}
		clear(e.unrecorded)
	}
	var p assignPlan
	if full {
		keep := map[string]bool{}
		for _, t := range upsert {
			keep[t.GetMeta().GetId()] = true
		}
		for id := range e.ctls {
			if !keep[id] {
				removed = append(removed, id)
			}
		}
	}
	starting := map[string]int{} // index in p.start, for duplicates
	for _, t := range upsert {
		id := t.GetMeta().GetId()
		if c, ok := e.ctls[id]; ok {
			if actionable(c.current(), t) {
				p.changed = append(p.changed, t)
			}
			p.held = append(p.held, t)
			continue
		}
		var n newTask
		st := t.GetStatus()
		switch {
		case st.GetState() >= shoalv1.TaskState_TASK_STATE_ACCEPTED && st.GetState() < shoalv1.TaskState_TASK_STATE_COMPLETE:
			// The managers think this node runs it, but the local state
			// has no trace of it (state dir wiped): say so rather than
			// silently starting a second copy.
			lost := failedStatus("the agent has no record of this task (its local state was lost)", nil)
			lost.Timestamp = timestamppb.Now()
			n = newTask{task: t, status: lost, lost: lost}
		case st.GetState() >= shoalv1.TaskState_TASK_STATE_COMPLETE:
			continue // ended elsewhere or before; nothing to run or clean
		default:
			n = newTask{task: t, status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED}}
		}
		if i, dup := starting[id]; dup {
			p.start[i] = n
			continue
		}
		starting[id] = len(p.start)
		p.start = append(p.start, n)
	}
	p.remove = removed
	return p, true
}

// applyAssign applies a plan whose records were written (recorded) or not.
func (e *Executor) applyAssign(p assignPlan, recorded bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctx.Err() != nil {
		return
	}
	for _, t := range p.held {
		// A controller may have finished its removal meanwhile.
		if c, ok := e.ctls[t.GetMeta().GetId()]; ok {
			c.update(t)
		}
	}
	for _, n := range p.start {
		id := n.task.GetMeta().GetId()
		if !recorded {
			e.unrecorded[id] = n.task
			continue
		}
		e.startCtlLocked(n.task, n.status)
		if n.lost != nil {
			e.queueStatusLocked(id, proto.Clone(n.lost).(*shoalv1.TaskStatus))
		}
	}
	for _, id := range p.remove {
		if c, ok := e.ctls[id]; ok {
			c.remove()
		}
	}
	if len(e.unrecorded) > 0 {
		e.scheduleRetryLocked()
	}
}

// clip bounds an untrusted string for a log line.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

func (e *Executor) startCtlLocked(t *shoalv1.Task, st *shoalv1.TaskStatus) {
	id := t.GetMeta().GetId()
	// The controller gets its own copy: e.statuses is read under e.mu,
	// the controller's status only by its goroutine.
	c := newTaskCtl(e, t, proto.Clone(st).(*shoalv1.TaskStatus))
	e.ctls[id] = c
	if _, ok := e.statuses[id]; !ok {
		e.statuses[id] = st
	}
	go c.run(e.ctx)
}

// forget drops a removed task's controller and records.
func (e *Executor) forget(id string) {
	e.statusMu.Lock() // no retried status write may bring the record back
	defer e.statusMu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.ctls, id)
	delete(e.statuses, id)
	delete(e.dirty, id)
	delete(e.unwritten, id)
	if err := e.db.delete(id); err != nil {
		e.log.Error("deleting task record", "task_id", id, "err", err)
	}
	if e.cfg.OnRemoved != nil {
		go e.cfg.OnRemoved(id)
	}
}

// setStatus records a task's observed status and queues it for the
// managers. The record is written first: a status is never reported that
// a crash right after could take back. A status whose write fails is not
// reported; the write is retried after a back-off (a newer status of the
// same task replaces it: states only move forward, so the newest says
// all).
func (e *Executor) setStatus(id string, st *shoalv1.TaskStatus) {
	if st.Timestamp == nil {
		st.Timestamp = timestamppb.Now()
	}
	// Only this task's controller sets its status, and statusMu orders it
	// against retries; the fsync runs outside e.mu and holds up no reader.
	e.statusMu.Lock()
	defer e.statusMu.Unlock()
	err := e.db.put(id, nil, st)
	e.mu.Lock()
	if err != nil {
		e.log.Error("recording task status; it is reported once recorded", "task_id", id, "state", st.GetState(), "err", err)
		e.unwritten[id] = st
		e.scheduleRetryLocked()
		e.mu.Unlock()
		return
	}
	delete(e.unwritten, id)
	c, held := e.ctls[id]
	if !held {
		e.mu.Unlock()
		return
	}
	e.queueStatusLocked(id, st)
	e.mu.Unlock()
	if e.cfg.OnStatus != nil {
		e.cfg.OnStatus(c.current(), st)
	}
}

// flushUnwritten writes (and then reports) the statuses whose write
// failed.
func (e *Executor) flushUnwritten() {
	e.statusMu.Lock()
	defer e.statusMu.Unlock()
	e.mu.Lock()
	todo := make(map[string]*shoalv1.TaskStatus, len(e.unwritten))
	for id, st := range e.unwritten {
		todo[id] = st
	}
	e.mu.Unlock()
	for id, st := range todo {
		err := e.db.put(id, nil, st)
		e.mu.Lock()
		if err != nil {
			e.log.Error("recording task status; will retry", "task_id", id, "state", st.GetState(), "err", err)
			e.scheduleRetryLocked()
		} else {
			delete(e.unwritten, id)
			if _, held := e.ctls[id]; held {
				e.queueStatusLocked(id, st)
			}
		}
		e.mu.Unlock()
	}
}

// scheduleRetryLocked arranges for tasks waiting for their record and
// statuses waiting for their write to be written again, after a back-off
// (100 ms doubling to 30 s; reset once everything is written). Callers
// hold e.mu.
func (e *Executor) scheduleRetryLocked() {
	if e.retry != nil || e.ctx == nil || e.ctx.Err() != nil {
		return
	}
	e.retryBackoff = min(max(2*e.retryBackoff, 100*time.Millisecond), 30*time.Second)
	e.retry = time.AfterFunc(e.retryBackoff, e.retryWrites)
}

func (e *Executor) retryWrites() {
	e.mu.Lock()
	e.retry = nil
	e.mu.Unlock()
	e.Assign(false, nil, nil) // tries the unrecorded tasks again
	e.flushUnwritten()
	e.mu.Lock()
	if len(e.unrecorded) == 0 && len(e.unwritten) == 0 {
		e.retryBackoff = 0
	}
	e.mu.Unlock()
}

// queueStatusLocked makes st the task's status to report.
func (e *Executor) queueStatusLocked(id string, st *shoalv1.TaskStatus) {
	if st.Timestamp == nil {
		st.Timestamp = timestamppb.Now()
	}
	e.statuses[id] = st
	e.dirty[id] = true
	select {
	case e.notify <- struct{}{}:
	default:
	}
	e.log.Debug("task status", "task_id", id, "state", st.GetState(), "message", st.GetMessage(), "err", st.GetErr())
}

// Updates is signalled when statuses are waiting to be sent.
func (e *Executor) Updates() <-chan struct{} { return e.notify }

// TakeUpdates returns the statuses not yet handed out (all of them when
// all is set, as a new session must resend everything).
func (e *Executor) TakeUpdates(all bool) []*shoalv1.TaskStatusUpdate {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*shoalv1.TaskStatusUpdate
	for id, st := range e.statuses {
		if st.GetState() < shoalv1.TaskState_TASK_STATE_ACCEPTED {
			continue // the managers' own states: nothing to report yet
		}
		if all || e.dirty[id] {
			out = append(out, &shoalv1.TaskStatusUpdate{TaskId: id, Status: proto.Clone(st).(*shoalv1.TaskStatus)})
		}
	}
	clear(e.dirty)
	sort.Slice(out, func(i, j int) bool { return out[i].GetTaskId() < out[j].GetTaskId() })
	return out
}

// Tasks returns the tasks this node holds, each with its observed status.
func (e *Executor) Tasks() []*shoalv1.Task {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*shoalv1.Task, 0, len(e.ctls))
	for id, c := range e.ctls {
		t := proto.Clone(c.current()).(*shoalv1.Task)
		if st := e.statuses[id]; st != nil {
			t.Status = proto.Clone(st).(*shoalv1.TaskStatus)
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetMeta().GetId() < out[j].GetMeta().GetId() })
	return out
}

// ImageInUse says whether a held task's container runs from the image
// with this digest (for image garbage collection).
func (e *Executor) ImageInUse(digest string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	// A status whose write failed is not in e.statuses yet (it is not
	// reported until written), but its container runs all the same.
	for _, m := range []map[string]*shoalv1.TaskStatus{e.statuses, e.unwritten} {
		for _, st := range m {
			if st.GetImageDigest() == digest && st.GetState() < shoalv1.TaskState_TASK_STATE_COMPLETE {
				return true
			}
		}
	}
	return false
}

// singleflight makes concurrent pulls of one reference share one pull.
type singleflight struct {
	mu sync.Mutex // guards calls
	m  map[string]*flight
}

type flight struct {
	done chan struct{}
	img  image.Image
	err  error
}

func (s *singleflight) do(ctx context.Context, key string, fn func() (image.Image, error)) (image.Image, error) {
	s.mu.Lock()
	if s.m == nil {
		s.m = map[string]*flight{}
	}
	if f, ok := s.m[key]; ok {
		s.mu.Unlock()
		select { // join the pull in flight
		case <-f.done:
			return f.img, f.err
		case <-ctx.Done():
			return image.Image{}, ctx.Err()
		}
	}
	f := &flight{done: make(chan struct{})}
	s.m[key] = f
	s.mu.Unlock()
	// The work runs on its own: the caller that started it may stop
	// waiting (its task was shut down) while others still want it.
	go func() {
		f.img, f.err = fn()
		s.mu.Lock()
		delete(s.m, key)
		s.mu.Unlock()
		close(f.done)
	}()
	select {
	case <-f.done:
		return f.img, f.err
	case <-ctx.Done():
		return image.Image{}, ctx.Err()
	}
}
