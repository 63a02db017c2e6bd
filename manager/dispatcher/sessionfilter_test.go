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

func svcEvent(s *shoalv1.Service) *shoalv1.WatchEvent {
	return &shoalv1.WatchEvent{Object: &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Service{Service: s}}}
}
