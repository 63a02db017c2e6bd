package cli

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// RemoveService deletes a service of the fake, by id or name.
func (f *fakeManager) RemoveService(_ context.Context, req *shoalv1.RemoveServiceRequest) (*shoalv1.RemoveServiceResponse, error) {
	f.cmu.Lock()
	defer f.cmu.Unlock()
	s := f.findService(req.GetRef())
	if s == nil {
		return nil, errdefs.NotFoundf("service %q: not found", req.GetRef())
	}
	f.services = slices.DeleteFunc(f.services, func(o *shoalv1.Service) bool { return o == s })
	return &shoalv1.RemoveServiceResponse{}, nil
}

func rmNode(id, name string, st shoalv1.NodeState, version uint64) *shoalv1.Node {
	return &shoalv1.Node{Meta: &shoalv1.Meta{Id: id, Version: version}, Spec: &shoalv1.NodeSpec{Name: name},
		Status: &shoalv1.NodeStatus{State: st}}
}

// rmTask is task id of service svc (id "svc"+svc) in slot, on node, in
// state st, desired REMOVE.
func rmTask(id, svc string, slot uint64, node string, st shoalv1.TaskState, version uint64) *shoalv1.Task {
	return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id, Version: version}, ServiceId: "svc" + svc, ServiceName: svc, Slot: slot,
		NodeId: node, DesiredState: shoalv1.TaskState_TASK_STATE_REMOVE, Status: &shoalv1.TaskStatus{State: st}}
}

func TestRmLeft(t *testing.T) {
	const (
		running  = shoalv1.TaskState_TASK_STATE_RUNNING
		pending  = shoalv1.TaskState_TASK_STATE_PENDING
		assigned = shoalv1.TaskState_TASK_STATE_ASSIGNED
	)
	nodes := map[string]*shoalv1.Node{
		"n1": rmNode("n1", "node1", shoalv1.NodeState_NODE_STATE_READY, 1),
		"n2": rmNode("n2", "node2", shoalv1.NodeState_NODE_STATE_DOWN, 1),
		"n3": rmNode("n3", "node3", shoalv1.NodeState_NODE_STATE_UNKNOWN, 1),
	}
	cases := []struct {
		name              string
		task              *shoalv1.Task
		wait, unconfirmed bool
	}{
		{"running on a ready node", rmTask("t", "web", 1, "n1", running, 1), true, false},
		{"assigned to a ready node", rmTask("t", "web", 1, "n1", assigned, 1), true, false},
		{"complete", rmTask("t", "web", 1, "n1", shoalv1.TaskState_TASK_STATE_COMPLETE, 1), false, false},
		{"shut down", rmTask("t", "web", 1, "n1", shoalv1.TaskState_TASK_STATE_SHUTDOWN, 1), false, false},
		{"failed", rmTask("t", "web", 1, "n1", shoalv1.TaskState_TASK_STATE_FAILED, 1), false, false},
		{"orphaned on a down node", rmTask("t", "web", 1, "n2", shoalv1.TaskState_TASK_STATE_ORPHANED, 1), false, false},
		{"running on a down node", rmTask("t", "web", 1, "n2", running, 1), false, true},
		{"running on an unknown node", rmTask("t", "web", 1, "n3", running, 1), false, true},
		{"running on a removed node", rmTask("t", "web", 1, "gone", running, 1), false, true},
		{"pending, no node: the orchestrator deletes it", rmTask("t", "web", 1, "", pending, 1), true, false},
		{"pending with a node preset, down", rmTask("t", "web", 1, "n2", pending, 1), true, false},
		{"running, of a service not removed", rmTask("t", "api", 1, "n1", running, 1), false, false},
	}
	removed := map[string]bool{"svcweb": true}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wait, unconfirmed := rmLeft(removed, map[string]*shoalv1.Task{"t": tc.task}, nodes)
			if (len(wait) == 1) != tc.wait || (len(unconfirmed) == 1) != tc.unconfirmed || len(wait)+len(unconfirmed) > 1 {
				t.Errorf("wait %d, unconfirmed %d; want wait %v, unconfirmed %v", len(wait), len(unconfirmed), tc.wait, tc.unconfirmed)
			}
		})
	}
	// Deleted: not in the set.
	if wait, unconfirmed := rmLeft(removed, map[string]*shoalv1.Task{}, nodes); len(wait)+len(unconfirmed) != 0 {
		t.Errorf("empty set: wait %d, unconfirmed %d", len(wait), len(unconfirmed))
	}
}

func rmNodeEvent(n *shoalv1.Node) *shoalv1.WatchEvent {
	return &shoalv1.WatchEvent{Action: shoalv1.WatchAction_WATCH_ACTION_UPDATE,
		Object: &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Node{Node: n}}}
}

func rmDeleteEvent(t *shoalv1.Task) *shoalv1.WatchEvent {
	ev := taskEvent(t)
	ev.Action = shoalv1.WatchAction_WATCH_ACTION_DELETE
	return ev
}

type rmStep struct {
	line   string
	events []*shoalv1.WatchEvent
}

// stepWriter collects output; waitFor returns once it holds a line.
type stepWriter struct {
	mu      sync.Mutex // guards buf and changed
	buf     strings.Builder
	changed chan struct{} // closed (and replaced) on each write
}

func newStepWriter() *stepWriter { return &stepWriter{changed: make(chan struct{})} }

func (w *stepWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	close(w.changed)
	w.changed = make(chan struct{})
	return len(p), nil
}

func (w *stepWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// waitFor reports whether the output came to hold s before ctx ended.
func (w *stepWriter) waitFor(ctx context.Context, s string) bool {
	for {
		w.mu.Lock()
		has, changed := strings.Contains(w.buf.String(), s), w.changed
		w.mu.Unlock()
		if has {
			return true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

// TestServiceRmWaits: `service rm` returns once every task of the removed
// services has ended or is deleted, printing the count as it falls; a
// task on a node that is not ready does not hold it (it is named at the
// end); --detach returns at once; a wait that runs out names the tasks
// left and says that the services are removed.
func TestServiceRmWaits(t *testing.T) {
	const (
		running  = shoalv1.TaskState_TASK_STATE_RUNNING
		complete = shoalv1.TaskState_TASK_STATE_COMPLETE
		ready    = shoalv1.NodeState_NODE_STATE_READY
	)
	cases := []struct {
		name  string
		args  []string
		nodes []*shoalv1.Node
		tasks []*shoalv1.Task
		// steps: each sends its events once the output holds its line.
		steps    []rmStep
		wantCode int
		want     []string // in stdout + stderr, in this order
		notWant  string
	}{
		{
			name:  "waits for the last task's end or deletion, of every service",
			args:  []string{"web", "cache"},
			nodes: []*shoalv1.Node{rmNode("n1", "node1", ready, 1)},
			tasks: []*shoalv1.Task{rmTask("w1", "web", 1, "n1", running, 2), rmTask("w2", "web", 2, "n1", running, 2),
				rmTask("c1", "cache", 1, "n1", running, 2)},
			steps: []rmStep{
				{"cache: 1 task(s) still stopping", []*shoalv1.WatchEvent{taskEvent(rmTask("w1", "web", 1, "n1", complete, 5)),
					rmDeleteEvent(rmTask("c1", "cache", 1, "n1", running, 2))}},
				{"web: 1 task(s) still stopping", []*shoalv1.WatchEvent{
					taskEvent(rmTask("w2", "web", 2, "n1", shoalv1.TaskState_TASK_STATE_SHUTDOWN, 6))}},
			},
			want: []string{"web\ncache\n", "web: 2 task(s) still stopping", "cache: 1 task(s) still stopping",
				"web: 1 task(s) still stopping", "web: removed (every task stopped)", "cache: removed (every task stopped)"},
		},
		{
			name:  "a task on a down node does not hold it",
			args:  []string{"web"},
			nodes: []*shoalv1.Node{rmNode("n1", "node1", ready, 1), rmNode("n2", "node2", shoalv1.NodeState_NODE_STATE_DOWN, 1)},
			tasks: []*shoalv1.Task{rmTask("w1", "web", 1, "n1", running, 2), rmTask("w2", "web", 2, "n2", running, 2)},
			steps: []rmStep{{"web: 1 task(s) still stopping", []*shoalv1.WatchEvent{taskEvent(rmTask("w1", "web", 1, "n1", complete, 5))}}},
			want:  []string{"web: 1 task(s) still stopping", "web: removed; 1 task(s) on node node2 (down) not confirmed stopped"},
		},
		{
			name:  "a node that stops being ready during the wait",
			args:  []string{"web"},
			nodes: []*shoalv1.Node{rmNode("n1", "node1", ready, 1), rmNode("n2", "node2", ready, 1)},
			tasks: []*shoalv1.Task{rmTask("w1", "web", 1, "n1", running, 2), rmTask("w2", "web", 2, "n2", running, 2)},
			steps: []rmStep{
				{"web: 2 task(s) still stopping", []*shoalv1.WatchEvent{taskEvent(rmTask("w1", "web", 1, "n1", complete, 5))}},
				{"web: 1 task(s) still stopping", []*shoalv1.WatchEvent{rmNodeEvent(rmNode("n2", "node2", shoalv1.NodeState_NODE_STATE_UNKNOWN, 6))}},
			},
			want: []string{"web: 2 task(s) still stopping", "web: 1 task(s) still stopping",
				"web: removed; 1 task(s) on node node2 (unknown) not confirmed stopped"},
		},
		{
			name:     "detach",
			args:     []string{"--detach", "web"},
			nodes:    []*shoalv1.Node{rmNode("n1", "node1", ready, 1)},
			tasks:    []*shoalv1.Task{rmTask("w1", "web", 1, "n1", running, 2)},
			want:     []string{"web\n"},
			notWant:  "stopping",
			wantCode: 0,
		},
		{
			name:     "timeout",
			args:     []string{"--wait-timeout", "300ms", "web"},
			nodes:    []*shoalv1.Node{rmNode("n1", "node1", ready, 1)},
			tasks:    []*shoalv1.Task{rmTask("w1", "web", 1, "n1", running, 2), rmTask("w2", "web", 2, "", shoalv1.TaskState_TASK_STATE_PENDING, 2)},
			wantCode: 1,
			want: []string{"web: 2 task(s) still stopping",
				"Error: web removed, but 2 task(s) did not stop within 300ms: web.1 (node1, running), web.2 (no node, pending)"},
			notWant: "removed (",
		},
		{
			name:     "a service that does not exist",
			args:     []string{"nope"},
			wantCode: 1,
			want:     []string{`service "nope": not found`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCLICluster(t)
			c.mgr.nodes = tc.nodes
			for _, s := range []string{"web", "cache"} {
				c.mgr.services = append(c.mgr.services, &shoalv1.Service{Meta: &shoalv1.Meta{Id: "svc" + s, Version: 1},
					Spec: &shoalv1.ServiceSpec{Name: s, Replicas: 1}, SpecVersion: 1})
			}
			c.mgr.tasks = tc.tasks
			out := newStepWriter()
			c.mgr.watch = func(_ *shoalv1.WatchRequest, st grpc.ServerStreamingServer[shoalv1.WatchEvent]) error {
				for _, step := range tc.steps {
					if !out.waitFor(st.Context(), step.line) {
						return st.Context().Err()
					}
					for _, ev := range step.events {
						if err := st.Send(ev); err != nil {
							return err
						}
					}
				}
				<-st.Context().Done()
				return st.Context().Err()
			}
			start := time.Now()
			code := c.runTo(out, out, slices.Concat([]string{"service", "rm"}, tc.args)...)
			got := out.String()
			checkOutput(t, got, code, tc.wantCode, tc.notWant, tc.want...)
			if tc.wantCode == 0 {
				c.mgr.cmu.Lock()
				left := len(c.mgr.services)
				c.mgr.cmu.Unlock()
				named := 0
				for _, a := range tc.args {
					if a == "web" || a == "cache" {
						named++
					}
				}
				if left != 2-named {
					t.Errorf("%d services left, want %d", left, 2-named)
				}
			}
			t.Logf("took %s", time.Since(start).Round(time.Millisecond))
		})
	}
}

// TestServiceRmResumes: a stream that breaks before any event (the
// manager went away) is opened again from the newest version the removal
// read (here a task's), and the wait goes on to its end.
func TestServiceRmResumes(t *testing.T) {
	c := newCLICluster(t)
	c.mgr.nodes = []*shoalv1.Node{rmNode("n1", "node1", shoalv1.NodeState_NODE_STATE_READY, 3)}
	c.mgr.services = []*shoalv1.Service{{Meta: &shoalv1.Meta{Id: "svcweb", Version: 1}, Spec: &shoalv1.ServiceSpec{Name: "web", Replicas: 1}}}
	c.mgr.tasks = []*shoalv1.Task{rmTask("w1", "web", 1, "n1", shoalv1.TaskState_TASK_STATE_RUNNING, 7)}
	out := newStepWriter()
	opens := &watchOpens{}
	c.mgr.watch = func(req *shoalv1.WatchRequest, st grpc.ServerStreamingServer[shoalv1.WatchEvent]) error {
		n := opens.add(req)
		if n == 1 {
			if !out.waitFor(st.Context(), "web: 1 task(s) still stopping") {
				return st.Context().Err()
			}
			return errdefs.Unavailablef("error reading from server: EOF")
		}
		if err := st.Send(taskEvent(rmTask("w1", "web", 1, "n1", shoalv1.TaskState_TASK_STATE_SHUTDOWN, 9))); err != nil {
			return err
		}
		<-st.Context().Done()
		return st.Context().Err()
	}
	code := c.runTo(out, out, "service", "rm", "web")
	if got := out.String(); code != 0 || !strings.Contains(got, "web: removed (every task stopped)") {
		t.Fatalf("exit %d:\n%s", code, got)
	}
	if froms := opens.list(); !slices.Equal(froms, []uint64{0, 7}) {
		t.Errorf("watches opened from %v, want [0 7]", froms)
	}
}
