package dispatcher

import (
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestSessionEvents: a session's watch keeps its node's tasks and node,
// tasks on networks (peers of every node on them) and every other kind,
// and drops other nodes' tasks, and other nodes and services until the
// cluster has a network; then a service's update only when it changes
// what the network states read of it.
func TestSessionEvents(t *testing.T) {
	task := func(node string, nets ...string) *shoalv1.WatchEvent {
		tk := &shoalv1.Task{Meta: &shoalv1.Meta{Id: "t"}, NodeId: node}
		for _, n := range nets {
			tk.Networks = append(tk.Networks, &shoalv1.NetworkAttachment{NetworkId: n})
		}
		return &shoalv1.WatchEvent{Object: &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Task{Task: tk}}}
	}
	node := func(id string) *shoalv1.WatchEvent {
		return &shoalv1.WatchEvent{Object: &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Node{Node: &shoalv1.Node{Meta: &shoalv1.Meta{Id: id}}}}}
	}
	var shared filterShared
	for _, c := range []struct {
		name string
		ev   *shoalv1.WatchEvent
		want bool
	}{
		{"own task", task("n1"), true},
		{"other node's task", task("n2"), false},
		{"unassigned task", task(""), false},
		{"other node's task on a network", task("n2", "net1"), true},
		{"own node", node("n1"), true},
		{"other node, no network yet", node("n2"), false},
		{"service, no network yet", svcEvent(&shoalv1.Service{}), false},
		{"cluster", &shoalv1.WatchEvent{Object: &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Cluster{Cluster: &shoalv1.Cluster{}}}}, true},
	} {
		if got := sessionEvents("n1", &shared)(c.ev, nil); got != c.want {
			t.Errorf("%s: kept %v, want %v", c.name, got, c.want)
		}
	}
	network := &shoalv1.WatchEvent{Object: &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Network{Network: &shoalv1.Network{}}}}
	if !sessionEvents("n1", &shared)(network, nil) {
		t.Error("network event dropped")
	}
	if !sessionEvents("n1", &shared)(node("n2"), nil) {
		t.Error("other node dropped after a network was seen")
	}
	stored := mkSvc("s1", "", map[string]string{"a": "10.1.0.2/16"}, "a")
	stored.Spec.Labels = map[string]string{"k": "v"}
	labelled := proto.Clone(stored).(*shoalv1.Service)
	labelled.Spec.Labels["k"] = "w"
	renamed := proto.Clone(stored).(*shoalv1.Service)
	renamed.Spec.Name = "other"
	for _, c := range []struct {
		name string
		ev   *shoalv1.WatchEvent
		prev raftstore.Object
		want bool
	}{
		{"service created (or deleted): no previous service", svcEvent(stored), nil, true},
		{"service updated, a label", svcEvent(labelled), stored, false},
		{"service updated, its name", svcEvent(renamed), stored, true},
		{"service updated, nothing", svcEvent(stored), stored, false},
	} {
		if got := sessionEvents("n1", &shared)(c.ev, c.prev); got != c.want {
			t.Errorf("%s: kept %v, want %v", c.name, got, c.want)
		}
	}
}

// TestSessionEventsTasksAndNodes: once the cluster has a network, another
// node's task on a network is kept when it is created or deleted taking
// part in the network states, and when an update changes what the states
// read of it; its status message, an update once it ended, a creation
// before it is on a node, are dropped; another node is kept when its
// underlay address or DOWN state changes, not for a label. Without prev
// (an event the store published with none) every such event is kept, and
// a session's own task or node always is.
func TestSessionEventsTasksAndNodes(t *testing.T) {
	var shared filterShared
	shared.nets.Store(true)
	keep := sessionEvents("n1", &shared)
	taskEv := func(action shoalv1.WatchAction, tk *shoalv1.Task) *shoalv1.WatchEvent {
		return &shoalv1.WatchEvent{Action: action, Object: raftstore.Wrap(tk)}
	}
	create, update, del := shoalv1.WatchAction_WATCH_ACTION_CREATE, shoalv1.WatchAction_WATCH_ACTION_UPDATE, shoalv1.WatchAction_WATCH_ACTION_DELETE
	running := mkNetTask("t1", "s1", "n2", stRunning, "a=10.1.0.3/24")
	messaged := proto.Clone(running).(*shoalv1.Task)
	messaged.Status.Message = "still up"
	starting := proto.Clone(running).(*shoalv1.Task)
	starting.Status.State = shoalv1.TaskState_TASK_STATE_STARTING
	failed := proto.Clone(running).(*shoalv1.Task)
	failed.Status.State = stFailed
	failedRemoved := proto.Clone(failed).(*shoalv1.Task)
	failedRemoved.DesiredState = shoalv1.TaskState_TASK_STATE_REMOVE
	pending := mkNetTask("t2", "s1", "", stPending, "a=10.1.0.4/24")
	own := mkNetTask("t3", "s1", "n1", stFailed, "a=10.1.0.5/24")
	nodeAt := func(addr string, st shoalv1.NodeState, labels map[string]string) *shoalv1.Node {
		n := mkNode("n2", addr, st)
		n.Spec.Labels = labels
		return n
	}
	n2 := nodeAt("192.168.250.2:4243", ready, nil)
	for _, c := range []struct {
		name string
		ev   *shoalv1.WatchEvent
		prev raftstore.Object
		want bool
	}{
		{"task created running", taskEv(create, running), nil, true},
		{"task created pending, on no node", taskEv(create, pending), nil, false},
		{"task deleted running", taskEv(del, running), nil, true},
		{"task deleted once ended", taskEv(del, failed), nil, false},
		{"task's status message", taskEv(update, messaged), running, false},
		{"task's state", taskEv(update, starting), running, true},
		{"task ended", taskEv(update, failed), running, true},
		{"task updated once ended", taskEv(update, failedRemoved), failed, false},
		{"task updated, no prev", taskEv(update, messaged), nil, true},
		{"own task updated once ended", taskEv(update, own), own, true},
		{"node labelled", &shoalv1.WatchEvent{Action: update, Object: raftstore.Wrap(nodeAt("192.168.250.2:4243", ready, map[string]string{"k": "v"}))}, n2, false},
		{"node's address", &shoalv1.WatchEvent{Action: update, Object: raftstore.Wrap(nodeAt("192.168.250.9:4243", ready, nil))}, n2, true},
		{"node down", &shoalv1.WatchEvent{Action: update, Object: raftstore.Wrap(nodeAt("192.168.250.2:4243", shoalv1.NodeState_NODE_STATE_DOWN, nil))}, n2, true},
		{"node updated, no prev", &shoalv1.WatchEvent{Action: update, Object: raftstore.Wrap(n2)}, nil, true},
		{"node created", &shoalv1.WatchEvent{Action: create, Object: raftstore.Wrap(n2)}, nil, true},
	} {
		if got := keep(c.ev, c.prev); got != c.want {
			t.Errorf("%s: kept %v, want %v", c.name, got, c.want)
		}
	}
}

func svcEvent(s *shoalv1.Service) *shoalv1.WatchEvent {
	return &shoalv1.WatchEvent{Object: &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Service{Service: s}}}
}
