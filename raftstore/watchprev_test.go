package raftstore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestWatchNodeGivesTheReplacedService: a WatchNode filter is given, with
// an update of a service (a patch or a whole update), the very service
// the update replaced, on the leader (which applies its own proposal) and
// on the followers (which decode the entry) alike, and nil with every
// other event (a creation, a deletion, a task); a subscription opened
// after the writes gets the same in the ring's replay.
func TestWatchNodeGivesTheReplacedService(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	type seen struct {
		key  string
		prev string // "v<version> labels" of prev, "" when nil
	}
	describe := func(o Object) string {
		if o == nil {
			return ""
		}
		s := o.(*shoalv1.Service)
		return fmt.Sprintf("v%d %v", s.GetMeta().GetVersion(), s.GetSpec().GetLabels())
	}
	record := func(mu *sync.Mutex, into *[]seen) KeepFunc {
		return func(ev *shoalv1.WatchEvent, prev Object) bool {
			mu.Lock()
			*into = append(*into, seen{eventKey(ev), describe(prev)})
			mu.Unlock()
			return true
		}
	}
	var mu sync.Mutex
	got := make([][]seen, len(c.nodes))
	var subs []Subscription
	for i, nd := range c.nodes {
		sub, err := nd.store.WatchNode(context.Background(), 0, "n1", record(&mu, &got[i]), KindService, KindTask)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		subs = append(subs, sub)
	}
	first := c.update(func(tx WriteTx) error {
		svc := mkService("s1", "web")
		svc.Spec.Labels = map[string]string{"k": "0"}
		return tx.Create(svc)
	})
	created, _ := Get[*shoalv1.Service](c.leader().store.View(), "s1")
	patched := c.update(func(tx WriteTx) error { // a patch: the entry carries no spec
		cur, _ := Get[*shoalv1.Service](tx, "s1")
		svc := &shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1", Version: cur.GetMeta().GetVersion()}, PreviousSpec: cur.GetSpec()}
		return tx.PatchService(svc, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"k": "1"}})
	})
	c.update(func(tx WriteTx) error { // a whole update
		cur, _ := Get[*shoalv1.Service](tx, "s1")
		svc := proto.Clone(cur).(*shoalv1.Service)
		svc.Spec.Labels["k"] = "2"
		return tx.Update(svc)
	})
	c.update(func(tx WriteTx) error { return tx.Create(mkTask("t1", "s1", "n1", 0, 0)) })
	last := c.update(func(tx WriteTx) error { return tx.Delete(KindService, "s1", 0) })
	for i := range subs {
		evs := collect(t, subs[i], 5)
		if evs[4].GetIndex() != last {
			t.Fatalf("%s: last event at %d, want %d", c.nodes[i].id, evs[4].GetIndex(), last)
		}
	}
	wantPrev := []string{"", fmt.Sprintf("v%d map[k:0]", created.GetMeta().GetVersion()), fmt.Sprintf("v%d map[k:1]", patched), "", ""}
	mu.Lock()
	for i, nd := range c.nodes {
		if len(got[i]) != len(wantPrev) {
			t.Fatalf("%s: the filter saw %d events, want %d: %v", nd.id, len(got[i]), len(wantPrev), got[i])
		}
		for j, w := range wantPrev {
			if got[i][j].prev != w {
				t.Errorf("%s: event %d (%s): prev %q, want %q", nd.id, j, got[i][j].key, got[i][j].prev, w)
			}
		}
	}
	mu.Unlock()
	// A subscription opened afterwards gets the same from the ring.
	var lateMu sync.Mutex
	var late []seen
	sub, err := c.leader().store.WatchNode(context.Background(), first, "n1", record(&lateMu, &late), KindService, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	collect(t, sub, 5)
	lateMu.Lock()
	defer lateMu.Unlock()
	for j, w := range wantPrev {
		if j >= len(late) || late[j].prev != w {
			t.Errorf("replay: event %d: %v, want prev %q", j, late, w)
			break
		}
	}
}

// TestNoPrevWithoutNodeSessions: a store with no node session (a
// follower, a leader without agents) keeps no replaced service in its
// ring, and starts to once a session subscribes.
func TestNoPrevWithoutNodeSessions(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, func(tx WriteTx) error { return tx.Create(mkService("s1", "web")) })
	label := func(v string) {
		mustUpdate(t, s, func(tx WriteTx) error {
			cur, _ := Get[*shoalv1.Service](tx, "s1")
			svc := &shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1", Version: cur.GetMeta().GetVersion()}, PreviousSpec: cur.GetSpec()}
			return tx.PatchService(svc, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"k": v}})
		})
	}
	lastPrev := func() Object {
		s.hub.mu.Lock()
		defer s.hub.mu.Unlock()
		return s.hub.ring[len(s.hub.ring)-1].prev
	}
	label("1")
	if p := lastPrev(); p != nil {
		t.Fatalf("no session, yet the ring keeps %v", p)
	}
	sub, err := s.WatchNode(context.Background(), 0, "n1", nil, KindService)
	if err != nil {
		t.Fatal(err)
	}
	label("2")
	if p, ok := lastPrev().(*shoalv1.Service); !ok || p.GetSpec().GetLabels()["k"] != "1" {
		t.Fatalf("with a session the ring keeps %v, want the service labelled k=1", lastPrev())
	}
	sub.Close()
	label("3")
	if p := lastPrev(); p != nil {
		t.Fatalf("the session closed, yet the ring keeps %v", p)
	}
}

// TestWatchNodeGivesTheReplacedTaskAndNode: with an update of a task (a
// compact status op, an assignment, a whole update) or of a node, a
// WatchNode filter is given the stored object the update replaced, on
// the leader and on the followers alike; creations and deletions come
// with nil.
func TestWatchNodeGivesTheReplacedTaskAndNode(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	describe := func(o Object) string {
		switch o := o.(type) {
		case nil:
			return ""
		case *shoalv1.Task:
			return fmt.Sprintf("task v%d %s on %q", o.GetMeta().GetVersion(), o.GetStatus().GetState(), o.GetNodeId())
		case *shoalv1.Node:
			return fmt.Sprintf("node v%d %q", o.GetMeta().GetVersion(), o.GetStatus().GetAddr())
		}
		return fmt.Sprintf("%T", o)
	}
	var mu sync.Mutex
	got := make([][]string, len(c.nodes))
	var subs []Subscription
	for i, nd := range c.nodes {
		sub, err := nd.store.WatchNode(context.Background(), 0, "n1", func(ev *shoalv1.WatchEvent, prev Object) bool {
			mu.Lock()
			got[i] = append(got[i], describe(prev))
			mu.Unlock()
			return true
		}, KindTask, KindNode)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		subs = append(subs, sub)
	}
	nodeCreated := c.update(func(tx WriteTx) error { return tx.Create(mkNode("n2", "n2", "h2")) })
	c.update(func(tx WriteTx) error {
		n, _ := Get[*shoalv1.Node](tx, "n2")
		n = proto.Clone(n).(*shoalv1.Node)
		n.Status = &shoalv1.NodeStatus{Addr: "192.168.250.2:4243"}
		return tx.Update(n)
	})
	taskCreated := c.update(func(tx WriteTx) error {
		// On a network: offered to every node's session (routeNode).
		task := mkTask("t1", "s1", "", shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_PENDING)
		task.Networks = []*shoalv1.NetworkAttachment{{NetworkId: "a", Address: "10.1.0.3/24"}}
		return tx.Create(task)
	})
	assigned := c.update(func(tx WriteTx) error {
		return tx.AssignTask("t1", taskCreated, "n2", &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED})
	})
	running := c.update(func(tx WriteTx) error {
		return tx.UpdateTaskStatus("t1", assigned, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING})
	})
	c.update(func(tx WriteTx) error {
		cur, _ := Get[*shoalv1.Task](tx, "t1")
		cur = proto.Clone(cur).(*shoalv1.Task)
		cur.DesiredState = shoalv1.TaskState_TASK_STATE_SHUTDOWN
		return tx.Update(cur)
	})
	c.update(func(tx WriteTx) error { return tx.Delete(KindTask, "t1", 0) })
	want := []string{
		"",
		fmt.Sprintf("node v%d %q", nodeCreated, ""),
		"",
		fmt.Sprintf("task v%d TASK_STATE_PENDING on %q", taskCreated, ""),
		fmt.Sprintf("task v%d TASK_STATE_ASSIGNED on %q", assigned, "n2"),
		fmt.Sprintf("task v%d TASK_STATE_RUNNING on %q", running, "n2"),
		"",
	}
	for i := range subs {
		collect(t, subs[i], len(want))
	}
	mu.Lock()
	defer mu.Unlock()
	for i, nd := range c.nodes {
		if !slices.Equal(got[i], want) {
			t.Errorf("%s: the filter's prevs\n%q\nwant\n%q", nd.id, got[i], want)
		}
	}
}

// TestWatchRingPrevTaskSharesTheStoredOnes: the task a status update
// replaced, kept in the ring, shares its spec and its networks with the
// task stored now, so a ring of status updates keeps each old task's own
// few fields alive, not a second copy of the tasks.
func TestWatchRingPrevTaskSharesTheStoredOnes(t *testing.T) {
	s := single(t, options{})
	sub, err := s.WatchNode(context.Background(), 0, "n1", nil, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	task := mkTask("t1", "s1", "n1", shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_ASSIGNED)
	task.Spec = &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo", Env: []string{"A=" + strings.Repeat("x", 4096)}}}
	task.Networks = []*shoalv1.NetworkAttachment{{NetworkId: "a", Address: "10.1.0.2/24"}}
	v := mustUpdate(t, s, func(tx WriteTx) error { return tx.Create(task) })
	mustUpdate(t, s, func(tx WriteTx) error {
		return tx.UpdateTaskStatus("t1", v, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING})
	})
	s.hub.mu.Lock()
	prev, _ := s.hub.ring[len(s.hub.ring)-1].prev.(*shoalv1.Task)
	s.hub.mu.Unlock()
	cur, _ := Get[*shoalv1.Task](s.View(), "t1")
	if prev == nil || prev.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_ASSIGNED {
		t.Fatalf("the ring keeps %v, want the ASSIGNED task", prev)
	}
	if prev.Spec != cur.Spec || len(prev.Networks) != 1 || len(cur.Networks) != 1 || prev.Networks[0] != cur.Networks[0] {
		t.Errorf("the kept task does not share its spec and networks with the stored one")
	}
}
