package raftstore

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestRingPrevMemoryReview measures what a full watch ring's prevs hold
// alive, with a node session open: 16,384 running tasks on a network
// (an interned spec) each given one status update (the ring then holds
// 16,384 updates whose prevs are versions no event holds), and 5,000
// nodes each given one whole update (a clone, as liveness writes). It
// reports the live heap with the ring's prevs and after clearing them,
// and fails if a task's prev costs more than 1 KiB (it shares the
// spec and networks) or a node's more than 2 KiB.
func TestRingPrevMemoryReview(t *testing.T) {
	if testing.Short() {
		t.Skip("measures a full ring")
	}
	s := single(t, options{})
	sub, err := s.WatchNode(context.Background(), 0, "n0", nil, KindTask, KindNode)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	done := make(chan struct{})
	go func() { // drain: a session that keeps up
		defer close(done)
		var buf []*shoalv1.WatchEvent
		for {
			select {
			case <-sub.Done():
				return
			case <-sub.Ready():
				var ok bool
				if buf, ok = sub.Take(buf[:0], 4096); !ok {
					return
				}
			}
		}
	}()
	defer func() { sub.Close(); <-done }()

	const tasks, nodes, per = 16384, 5000, 512
	spec := &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "registry.example/team/web:1.2.3",
		Env: []string{"A=1", "B=2", "LOG_LEVEL=info"}, Args: []string{"--port", "8080"}}}
	for b := 0; b < tasks; b += per {
		mustUpdate(t, s, func(tx WriteTx) error {
			for i := b; i < b+per; i++ {
				tk := mkTask(fmt.Sprintf("t%05d", i), "web", fmt.Sprintf("n%04d", i%nodes), shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_RUNNING)
				tk.ServiceName, tk.Slot = "web", uint64(i)
				tk.Spec = proto.Clone(spec).(*shoalv1.TaskSpec)
				tk.Networks = []*shoalv1.NetworkAttachment{{NetworkId: "net1", Address: "10.1.0.3/16", Mac: "02:42:0a:01:00:03", Aliases: []string{"web"}}}
				tk.Status.Message, tk.Status.Timestamp = "started", timestamppb.Now()
				if err := tx.Create(tk); err != nil {
					return err
				}
			}
			return nil
		})
	}
	for b := 0; b < nodes; b += per {
		mustUpdate(t, s, func(tx WriteTx) error {
			for i := b; i < min(b+per, nodes); i++ {
				n := mkNode(fmt.Sprintf("n%04d", i), fmt.Sprintf("node-%04d", i), fmt.Sprintf("host-%04d.example", i))
				n.Spec.Labels = map[string]string{"zone": "a", "rack": fmt.Sprint(i % 40)}
				n.Description.Os, n.Description.Arch, n.Description.EngineVersion = "linux", "amd64", "shoal 1.0"
				n.Description.Resources = &shoalv1.Resources{NanoCpus: 8e9, MemoryBytes: 32 << 30, Pids: 4096}
				n.Status = &shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_READY, Addr: "192.168.250.1:4243",
					AgentAddr: "192.168.250.1:4244", GossipAddr: "192.168.250.1:7946", GossipState: "alive", LastHeartbeat: timestamppb.Now()}
				n.CertSerial = "5f3a9c0e4b1d2f7a8c6e0b9d1a3f5c7e"
				if err := tx.Create(n); err != nil {
					return err
				}
			}
			return nil
		})
	}
	// The updates: the ring (16,384 events) ends up holding nodes updates
	// then the tasks' status updates; their prevs are versions whose own
	// events left the ring.
	for b := 0; b < nodes; b += per {
		mustUpdate(t, s, func(tx WriteTx) error {
			for i := b; i < min(b+per, nodes); i++ {
				cur, _ := Get[*shoalv1.Node](tx, fmt.Sprintf("n%04d", i))
				n := proto.Clone(cur).(*shoalv1.Node)
				n.Status.GossipState = "suspect"
				if err := tx.Update(n); err != nil {
					return err
				}
			}
			return nil
		})
	}
	for b := nodes; b < tasks; b += per { // the last tasks-nodes tasks: the ring is full
		mustUpdate(t, s, func(tx WriteTx) error {
			for i := b; i < min(b+per, tasks); i++ {
				id := fmt.Sprintf("t%05d", i)
				cur, _ := Get[*shoalv1.Task](tx, id)
				if err := tx.UpdateTaskStatus(id, cur.GetMeta().GetVersion(), &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING, Message: "healthy", Timestamp: timestamppb.Now()}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	heap := liveHeap
	s.hub.mu.Lock()
	var taskPrevs, nodePrevs int
	for _, e := range s.hub.ring {
		switch e.prev.(type) {
		case *shoalv1.Task:
			taskPrevs++
		case *shoalv1.Node:
			nodePrevs++
		}
	}
	ringLen := len(s.hub.ring)
	s.hub.mu.Unlock()
	with := heap()
	// Without the node prevs (the tasks' still kept), then without any.
	s.hub.mu.Lock()
	for i := range s.hub.ring {
		if _, ok := s.hub.ring[i].prev.(*shoalv1.Node); ok {
			s.hub.ring[i].prev = nil
		}
	}
	s.hub.mu.Unlock()
	noNodes := heap()
	s.hub.mu.Lock()
	for i := range s.hub.ring {
		s.hub.ring[i].prev = nil
	}
	s.hub.mu.Unlock()
	none := heap()
	perNode := float64(int64(with)-int64(noNodes)) / float64(max(nodePrevs, 1))
	perTask := float64(int64(noNodes)-int64(none)) / float64(max(taskPrevs, 1))
	t.Logf("ring %d events: %d task prevs, %d node prevs; live heap %.1f MB with prevs, %.1f MB less the nodes', %.1f MB with none: %.0f B a node's prev, %.0f B a task's",
		ringLen, taskPrevs, nodePrevs, float64(with)/1e6, float64(noNodes)/1e6, float64(none)/1e6, perNode, perTask)
	if taskPrevs < 10000 || nodePrevs < 4000 {
		t.Fatalf("the ring holds %d task and %d node prevs: the measurement's premise failed", taskPrevs, nodePrevs)
	}
	if perTask > 1024 || perNode > 2048 {
		t.Errorf("a task's prev holds %.0f B, a node's %.0f B: more than their own fields", perTask, perNode)
	}
}
