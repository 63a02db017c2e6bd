package dispatcher

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// bigTask is an assigned task of about size bytes.
func bigTask(id, node string, size int) *shoalv1.Task {
	t := task(id, node, shoalv1.TaskState_TASK_STATE_ASSIGNED)
	t.Spec = &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo", Env: []string{"PAD=" + strings.Repeat("x", size)}}}
	return t
}

func TestChunkAssignments(t *testing.T) {
	var set []*shoalv1.Task
	for i := 0; i < 100; i++ {
		set = append(set, bigTask(fmt.Sprintf("t%03d", i), "n1", 100))
	}
	removed := []string{"gone1", "gone2", "gone3"}
	const limit = 1000
	chunks := chunkAssignments(true, set, removed, limit)
	if len(chunks) < 10 {
		t.Fatalf("%d chunks for about 12 KB at 1 KB each", len(chunks))
	}
	var up []*shoalv1.Task
	var rm []string
	for i, c := range chunks {
		if c.GetFull() != (i == 0) {
			t.Errorf("chunk %d: full=%v", i, c.GetFull())
		}
		if c.GetMore() != (i < len(chunks)-1) {
			t.Errorf("chunk %d of %d: more=%v", i, len(chunks), c.GetMore())
		}
		if n := proto.Size(c); n > limit {
			t.Errorf("chunk %d is %d bytes, limit %d", i, n, limit)
		}
		up = append(up, c.GetUpsert()...)
		rm = append(rm, c.GetRemoved()...)
	}
	if len(up) != len(set) || fmt.Sprint(rm) != fmt.Sprint(removed) {
		t.Fatalf("chunks carry %d tasks and %v", len(up), rm)
	}
	for i := range up {
		if up[i] != set[i] {
			t.Fatalf("task %d out of order", i)
		}
	}

	// Empty and small sets are one message; a task over the limit travels
	// alone.
	if c := chunkAssignments(true, nil, nil, limit); len(c) != 1 || !c[0].GetFull() || c[0].GetMore() {
		t.Fatalf("empty full set: %v", c)
	}
	if c := chunkAssignments(false, set[:2], nil, limit); len(c) != 1 || c[0].GetFull() || c[0].GetMore() {
		t.Fatalf("small diff: %v", c)
	}
	huge := bigTask("huge", "n1", 3*limit)
	c := chunkAssignments(false, []*shoalv1.Task{set[0], huge, set[1]}, nil, limit)
	if len(c) != 3 || len(c[1].GetUpsert()) != 1 || c[1].GetUpsert()[0] != huge {
		t.Fatalf("a task over the limit is not alone: %d chunks", len(c))
	}
}

// TestChunkOneNotSized: a diff of one task (nearly every diff at 5,000
// nodes) or one removal is one message without sizing the task, however
// big it is; two tasks are sized.
func TestChunkOneNotSized(t *testing.T) {
	calls := 0
	defer func(f func(*shoalv1.Task) int) { taskSize = f }(taskSize)
	taskSize = func(tk *shoalv1.Task) int { calls++; return proto.Size(tk) }
	huge := bigTask("huge", "n1", 5000)
	for _, tt := range []struct {
		up      []*shoalv1.Task
		removed []string
	}{{[]*shoalv1.Task{huge}, nil}, {nil, []string{"gone"}}} {
		c := chunkAssignments(false, tt.up, tt.removed, 1000)
		if len(c) != 1 || c[0].GetMore() || c[0].GetFull() || len(c[0].GetUpsert()) != len(tt.up) || len(c[0].GetRemoved()) != len(tt.removed) {
			t.Fatalf("one-item diff: %v", c)
		}
	}
	if c := chunkAssignments(true, []*shoalv1.Task{huge}, nil, 1000); len(c) != 1 || !c[0].GetFull() {
		t.Fatalf("one-task full set: %v", c)
	}
	if calls != 0 {
		t.Fatalf("a one-item diff was sized %d times", calls)
	}
	chunkAssignments(false, []*shoalv1.Task{huge, huge}, nil, 1000)
	if calls != 2 {
		t.Fatalf("a two-task diff was sized %d times, want 2", calls)
	}
}

// TestFullSetOverMessageLimit: a node holding more than gRPC's 4 MiB of
// tasks opens its session: the full set arrives in chunks of bounded size
// over a real gRPC connection with default limits, every task once.
func TestFullSetOverMessageLimit(t *testing.T) {
	const n, size = 5000, 1200 // about 6 MB
	_, trans := raft.NewInmemTransport("solo:4242")
	logger := slog.New(slog.DiscardHandler)
	s, err := raftstore.Open(raftstore.Config{NodeID: "solo", InMemory: true, Transport: trans, Bootstrap: true,
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		// The channel is taken before the check: leadership won between
		// the two would otherwise be a change nobody waits for.
		changed := s.LeadershipChanged()
		if s.IsLeader() {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatal("the store does not lead")
		}
	}
	if _, err := s.Update(ctx, func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Node{Meta: &shoalv1.Meta{Id: "n1"}, Spec: &shoalv1.NodeSpec{}})
	}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += 500 {
		if _, err := s.Update(ctx, func(tx raftstore.WriteTx) error {
			for j := i; j < i+500; j++ {
				if err := tx.Create(bigTask(fmt.Sprintf("t%05d", j), "n1", size)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	d := New(Config{Store: s, Logger: logger, Managers: func() []string { return []string{"solo:4242"} }})
	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(runCtx) }()
	t.Cleanup(func() { stopRun(); <-runDone })
	conn := serveDispatcher(t, d, asNode1)

	// The dispatcher serves once Run has started: retry until welcomed.
	var stream shoalv1.Dispatcher_SessionClient
	for {
		stream, err = shoalv1.NewDispatcherClient(conn).Session(ctx)
		if err == nil {
			err = stream.Send(&shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Hello{Hello: &shoalv1.AgentHello{Addr: "n1"}}})
		}
		var first *shoalv1.SessionMessage
		if err == nil {
			first, err = stream.Recv()
		}
		if err == nil && first.GetWelcome() != nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no session: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval while Run starts
	}
	got := map[string]bool{}
	chunks := 0
	for {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %d chunks (%d tasks): %v", chunks, len(got), err)
		}
		a := msg.GetAssignments()
		if a == nil {
			continue
		}
		if a.GetFull() != (chunks == 0) {
			t.Fatalf("chunk %d: full=%v", chunks, a.GetFull())
		}
		if sz := proto.Size(msg); sz > maxAssignmentBytes+64<<10 {
			t.Fatalf("chunk %d is %d bytes", chunks, sz)
		}
		chunks++
		for _, tk := range a.GetUpsert() {
			if got[tk.GetMeta().GetId()] {
				t.Fatalf("task %s sent twice", tk.GetMeta().GetId())
			}
			got[tk.GetMeta().GetId()] = true
		}
		if !a.GetMore() {
			break
		}
	}
	if len(got) != n || chunks < 6 {
		t.Fatalf("%d tasks in %d chunks, want %d in >= 6", len(got), chunks, n)
	}
	stream.CloseSend()
}

// TestTakeStatuses: a pile of status updates is written in bounded
// entries, by count and by the size of the tasks they rewrite.
func TestTakeStatuses(t *testing.T) {
	pending := map[string]statusUpdate{}
	for i := 0; i < 2500; i++ {
		id := fmt.Sprintf("t%04d", i)
		pending[id] = statusUpdate{nodeID: "n1", upd: &shoalv1.TaskStatusUpdate{TaskId: id}}
	}
	small := func(statusUpdate) int { return 100 }
	var sizes []int
	for len(pending) > 0 {
		sizes = append(sizes, len(takeStatuses(pending, small)))
	}
	if fmt.Sprint(sizes) != "[1000 1000 500]" {
		t.Fatalf("batches of %v, want 1000, 1000, 500", sizes)
	}
	for i := 0; i < 10; i++ {
		id := fmt.Sprintf("t%04d", i)
		pending[id] = statusUpdate{nodeID: "n1", upd: &shoalv1.TaskStatusUpdate{TaskId: id}}
	}
	big := func(statusUpdate) int { return 400 << 10 }
	if b := takeStatuses(pending, big); len(b) != 3 || len(pending) != 7 {
		t.Fatalf("400 KiB tasks: batch of %d, %d left; want 3 (1.2 MiB), 7", len(b), len(pending))
	}
	one := map[string]statusUpdate{"x": {}}
	if b := takeStatuses(one, big); len(b) != 1 || len(one) != 0 {
		t.Fatal("a single update is not taken")
	}
}
