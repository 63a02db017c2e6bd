package orchestrator

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/shoal-dev/shoal/manager/allocator"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestSchedulerWaitsForAllocation: with the allocator running next to the
// orchestrator, tasks of a service on a network are assigned only once
// they hold their attachments (every ASSIGNED version seen on the watch
// has them), and a task that cannot be allocated (its network is gone)
// stays PENDING, unassigned, with the allocator's reason.
func TestSchedulerWaitsForAllocation(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1"), mkNode("n2"),
		&shoalv1.Network{Meta: &shoalv1.Meta{Id: "net1"}, Spec: &shoalv1.NetworkSpec{Name: "front", Driver: "overlay"}, Subnet: "10.1.0.0/24", Gateway: "10.1.0.1", Vni: 4096})

	ctx, cancel := context.WithCancel(context.Background())
	sub, err := s.Watch(ctx, s.View().Index()+1, raftstore.KindTask)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var bad []string
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for ev := range sub.C() {
			tk := ev.GetObject().GetTask()
			if tk.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_ASSIGNED && !allocator.Allocated(tk) {
				mu.Lock()
				bad = append(bad, tk.GetMeta().GetId())
				mu.Unlock()
			}
		}
	}()
	allocDone := make(chan error, 1)
	go func() { allocDone <- allocator.New(s, testLogger()).Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		sub.Close()
		<-watched
		if err := <-allocDone; err != nil {
			t.Errorf("allocator: %v", err)
		}
	})
	startOrchestrator(t, s)

	withNet := func(target string) svcOpt {
		return func(svc *shoalv1.Service) {
			svc.Spec.Task.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: target, Aliases: []string{"w"}}}
		}
	}
	create(t, s, mkService("web", 4, noRestartDelay(), withNet("net1")), mkService("lost", 1, noRestartDelay(), withNet("nosuch")))
	eventually(t, "web's 4 tasks assigned with addresses", func() error {
		ts := tasksOf(s, "web")
		if err := allAssigned(ts, 4); err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, tk := range ts {
			if len(tk.GetNetworks()) != 1 || tk.GetNetworks()[0].GetAddress() == "" {
				return fmt.Errorf("task %s has no address", tk.GetMeta().GetId())
			}
			a := tk.GetNetworks()[0].GetAddress()
			if seen[a] {
				return fmt.Errorf("address %s twice", a)
			}
			seen[a] = true
		}
		return nil
	})
	eventually(t, "lost's task pending with a reason", func() error {
		ts := tasksOf(s, "lost")
		if len(ts) != 1 {
			return fmt.Errorf("%d tasks", len(ts))
		}
		tk := ts[0]
		if tk.GetNodeId() != "" || tk.GetStatus().GetState() != statePending || tk.GetStatus().GetMessage() == "" {
			return fmt.Errorf("task: node %q state %s message %q", tk.GetNodeId(), tk.GetStatus().GetState(), tk.GetStatus().GetMessage())
		}
		return nil
	})
	svc, _ := raftstore.Get[*shoalv1.Service](s.View(), "web")
	if len(svc.GetVips()) != 1 {
		t.Errorf("web VIPs %v, want one", svc.GetVips())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("tasks assigned before allocation: %v", bad)
	}
}
