package dispatcher

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// sessionRig is a leader's dispatcher with the real gRPC sessions of
// nodes n000… open: a store (in-memory raft) holding an overlay network
// "a", service "web" with one task on it per node, and service "bench"
// on no network; each agent heartbeats and counts the network messages
// it receives and their bytes. deltas: the agents take network deltas
// (today's agents), or whole states only (an earlier release's).
type sessionRig struct {
	s        *raftstore.Store
	d        *Dispatcher
	deltas   bool
	networks []atomic.Int64 // per node: Networks messages received
	netBytes atomic.Int64   // their encoded size, all nodes
}

func newSessionRig(tb testing.TB, nodes int, deltas bool) *sessionRig {
	tb.Helper()
	s := openStore(tb)
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	if _, err := s.Update(ctx, func(tx raftstore.WriteTx) error {
		if err := tx.Create(mkNet("a")); err != nil {
			return err
		}
		if err := tx.Create(mkSvc("web", "", map[string]string{"a": "10.1.0.2/24"}, "a")); err != nil {
			return err
		}
		if err := tx.Create(&shoalv1.Service{Meta: &shoalv1.Meta{Id: "bench"}, Spec: &shoalv1.ServiceSpec{Name: "bench", Labels: map[string]string{"v": "0"}, Task: &shoalv1.TaskSpec{}}}); err != nil {
			return err
		}
		for i := range nodes {
			n := mkNode(fmt.Sprintf("n%03d", i), fmt.Sprintf("192.168.250.%d:4243", i%250+1), ready)
			if err := tx.Create(n); err != nil {
				return err
			}
			if err := tx.Create(mkNetTask(fmt.Sprintf("t%03d", i), "web", n.Meta.Id, stRunning, fmt.Sprintf("a=10.1.0.%d/24", i%250+3))); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	r := &sessionRig{s: s, deltas: deltas, networks: make([]atomic.Int64, nodes)}
	r.d = New(Config{Store: s, Logger: slog.New(slog.DiscardHandler), Managers: func() []string { return []string{"solo:4242"} }})
	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- r.d.Run(runCtx) }()
	tb.Cleanup(func() { stopRun(); <-runDone })
	conn := serveDispatcher(tb, r.d, rigIdentity)
	var wg sync.WaitGroup
	// Cleanups run last-added first: the agents, the connection, the
	// server, then Run.
	tb.Cleanup(func() { cancel(); wg.Wait() })
	welcomed := make(chan error, nodes)
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.agent(ctx, conn, i, welcomed)
		}()
	}
	for range nodes {
		if err := <-welcomed; err != nil {
			tb.Fatal(err)
		}
	}
	poll(tb, "every agent's first network state", func() bool {
		for i := range r.networks {
			if r.networks[i].Load() == 0 {
				return false
			}
		}
		return true
	})
	return r
}

// agent is node i's session (runTestAgent), counting the network
// messages it receives.
func (r *sessionRig) agent(ctx context.Context, conn *grpc.ClientConn, i int, welcomed chan<- error) {
	runTestAgent(ctx, conn, fmt.Sprintf("n%03d", i), r.deltas, welcomed, func(n *shoalv1.Networks) {
		r.netBytes.Add(int64(proto.Size(n)))
		r.networks[i].Add(1)
	})
}

// patchLabel writes a new value of service id's label v (PatchService, as
// `service update --label-add`).
func (r *sessionRig) patchLabel(tb testing.TB, id, value string) {
	tb.Helper()
	cur, _ := raftstore.Get[*shoalv1.Service](r.s.View(), id)
	svc := &shoalv1.Service{Meta: &shoalv1.Meta{Id: id, Version: cur.GetMeta().GetVersion()}, PreviousSpec: cur.GetSpec(),
		SpecVersion: cur.GetSpecVersion(), Vips: cur.GetVips()}
	if _, err := r.s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		return tx.PatchService(svc, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"v": value}})
	}); err != nil {
		tb.Fatal(err)
	}
}

// TestLabelWriteWakesNoSession: a label written on a service on the
// network, and on one on no network, reaches no node's session; the alias
// of the service on the network written next reaches every session (one
// event each, not three) and every agent gets the new state.
func TestLabelWriteWakesNoSession(t *testing.T) {
	const nodes = 5
	r := newSessionRig(t, nodes, true)
	// A first alias, as a marker: once every agent has its state, every
	// session has taken every event before it.
	r.setAlias(t, "m0")
	taken := r.d.sessionEventsTaken.Load()
	r.patchLabel(t, "web", "1")
	r.patchLabel(t, "bench", "1")
	r.setAlias(t, "www")
	if n := r.d.sessionEventsTaken.Load() - taken; n != nodes {
		t.Errorf("the sessions took %d events for two labels and an alias, want %d (the alias once each)", n, nodes)
	}
}

// setAlias gives service web's tasks the alias on network a and waits
// until every agent has received a network state since.
func (r *sessionRig) setAlias(t *testing.T, alias string) {
	t.Helper()
	got := make([]int64, len(r.networks))
	for i := range got {
		got[i] = r.networks[i].Load()
	}
	cur, _ := raftstore.Get[*shoalv1.Service](r.s.View(), "web")
	svc := proto.Clone(cur).(*shoalv1.Service)
	svc.Spec.Task.Networks[0].Aliases = []string{alias}
	if _, err := r.s.Update(context.Background(), func(tx raftstore.WriteTx) error { return tx.Update(svc) }); err != nil {
		t.Fatal(err)
	}
	poll(t, "every agent gets alias "+alias, func() bool {
		for i := range r.networks {
			if r.networks[i].Load() == got[i] {
				return false
			}
		}
		return true
	})
}

// BenchmarkServiceWriteOverSessions: what a service write that changes
// nothing a node is sent (a label, as `service update --label-add` or the
// write benchmark's PatchService) costs a leader with N agents' sessions
// open, the cluster having an overlay network with one task per node on
// it. cpu-µs/write is the whole process's user + system time over the
// writes (the sessions' work runs beside the writer, so ns/op alone
// would hide it); events/write counts the events the sessions took.
func BenchmarkServiceWriteOverSessions(b *testing.B) {
	for _, n := range []int{0, 50, 200} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) { benchLabelWrites(b, n, "bench") })
	}
}

// benchLabelWrites writes service's label once per op with N sessions
// open (benchWrites).
func benchLabelWrites(b *testing.B, sessions int, service string) {
	benchWrites(b, sessions, true, "write", func(r *sessionRig, seq int) { r.patchLabel(b, service, fmt.Sprint(seq)) })
}

// settle waits until the sessions have done what the writes gave them:
// until a 20 ms spell passes in which the process used under 2 ms of CPU
// (a benchmark's measure, not a test's sync: nothing is asserted on it).
func settle(b *testing.B) {
	b.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		var r0, r1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
		time.Sleep(20 * time.Millisecond)
		syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
		if used := (r1.Utime.Nano() + r1.Stime.Nano()) - (r0.Utime.Nano() + r0.Stime.Nano()); used < int64(2*time.Millisecond) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("the sessions did not settle in %v", waitFor)
		}
	}
}

// BenchmarkTaskLifecycleOverSessions: what one task's life on an overlay
// network costs a leader with N agents' sessions open (the cluster of
// newSessionRig): created, given addresses, assigned, ACCEPTED,
// PREPARING, STARTING, RUNNING, a status message, stopped, SHUTDOWN,
// updated once ended, deleted — 12 writes, as the orchestrator, the
// allocator and an agent make them (taskLife). cpu-µs/life is the whole
// process's CPU per life; events/life counts the events the sessions took.
// deltas=false: agents of an earlier release, sent whole network states.
func BenchmarkTaskLifecycleOverSessions(b *testing.B) {
	for _, n := range []int{0, 50, 200} {
		for _, deltas := range []bool{false, true} {
			b.Run(fmt.Sprintf("sessions=%d/deltas=%v", n, deltas), func(b *testing.B) {
				node := "n000"
				if n == 0 {
					node = "nowhere"
				}
				benchWrites(b, n, deltas, "life", func(r *sessionRig, seq int) { taskLife(b, r.s, fmt.Sprintf("life%d", seq), node) })
			})
		}
	}
}

// BenchmarkTaskStatusMessageOverSessions: a status update of a running
// task on an overlay network that changes no network state (its message,
// as a failing streak or a report repeated after an agent restart) with
// N sessions open; only the task's own node's session needs it.
func BenchmarkTaskStatusMessageOverSessions(b *testing.B) {
	for _, n := range []int{1, 50, 200} { // t000 is n000's
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			benchWrites(b, n, true, "write", func(r *sessionRig, seq int) {
				taskStatus(b, r.s, "t000", &shoalv1.TaskStatus{State: stRunning, Message: fmt.Sprint(seq)})
			})
		})
	}
}

// benchWrites runs write once per op (a unit: a write, a life) with N
// sessions open (newSessionRig) and reports, per op, the process's CPU,
// the events the sessions took, the network states computed (netCache)
// and the Networks messages the agents received: a session that keeps up
// with the writer sends each state, one that lags sends only the newest,
// and the CPU follows the messages (docs/performance.md, "Review of
// s15-taskprev"), so compare builds at equal netmsgs.
func benchWrites(b *testing.B, sessions int, deltas bool, unit string, write func(r *sessionRig, seq int)) {
	r := newSessionRig(b, sessions, deltas)
	msgs := func() int64 {
		var n int64
		for i := range r.networks {
			n += r.networks[i].Load()
		}
		return n
	}
	computed := func() int {
		r.d.nets.mu.Lock()
		defer r.d.nets.mu.Unlock()
		return r.d.nets.computed
	}
	settle(b)
	var before, after syscall.Rusage
	taken, c0, m0, by0 := r.d.sessionEventsTaken.Load(), computed(), msgs(), r.netBytes.Load()
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	seq := 0
	for b.Loop() {
		seq++
		write(r, seq)
	}
	settle(b)
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	f := float64(seq)
	b.ReportMetric(float64(cpu.Microseconds())/f, "cpu-µs/"+unit)
	b.ReportMetric(float64(r.d.sessionEventsTaken.Load()-taken)/f, "events/"+unit)
	b.ReportMetric(float64(computed()-c0)/f, "computed/"+unit)
	b.ReportMetric(float64(msgs()-m0)/f, "netmsgs/"+unit)
	b.ReportMetric(float64(r.netBytes.Load()-by0)/f, "netbytes/"+unit)
}

// taskLife writes the life of task id of service web on node (see
// BenchmarkTaskLifecycleOverSessions).
func taskLife(tb testing.TB, s *raftstore.Store, id, node string) {
	tb.Helper()
	if _, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, ServiceId: "web", ServiceName: "svc-web",
			DesiredState: stRunning, Status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_NEW}})
	}); err != nil {
		tb.Fatal(err)
	}
	taskWrite(tb, s, id, func(x *shoalv1.Task) {
		x.Networks = []*shoalv1.NetworkAttachment{{NetworkId: "a", Address: "10.1.1.1/24", Mac: "m-" + id}}
		x.Status = &shoalv1.TaskStatus{State: stPending}
	})
	if _, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		cur, _ := raftstore.Get[*shoalv1.Task](tx, id)
		return tx.AssignTask(id, cur.GetMeta().GetVersion(), node, &shoalv1.TaskStatus{State: stAssigned})
	}); err != nil {
		tb.Fatal(err)
	}
	for _, st := range []shoalv1.TaskState{shoalv1.TaskState_TASK_STATE_ACCEPTED, shoalv1.TaskState_TASK_STATE_PREPARING, shoalv1.TaskState_TASK_STATE_STARTING, stRunning} {
		taskStatus(tb, s, id, &shoalv1.TaskStatus{State: st})
	}
	taskStatus(tb, s, id, &shoalv1.TaskStatus{State: stRunning, Message: "up"})
	taskWrite(tb, s, id, func(x *shoalv1.Task) { x.DesiredState = shoalv1.TaskState_TASK_STATE_SHUTDOWN })
	taskStatus(tb, s, id, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_SHUTDOWN})
	taskWrite(tb, s, id, func(x *shoalv1.Task) { x.DesiredState = shoalv1.TaskState_TASK_STATE_REMOVE })
	if _, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error { return tx.Delete(raftstore.KindTask, id, 0) }); err != nil {
		tb.Fatal(err)
	}
}
