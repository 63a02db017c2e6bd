package dispatcher

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestNetworkDeltasHostileWrites: over real sessions (stateRig: n1 and n3
// take deltas, n2 and n4 whole states), the writes that could leave an
// agent holding a state that is not the manager's if a delta were made
// from the wrong base — a task with two attachments on one network (an
// old spec, a direct store write: its task id twice in the endpoints), a
// network object changed in the same entry as an endpoint, a node-local
// bridge network whose task moves between nodes (each node its own
// state), ingress widening a network to a node running none of its
// tasks, a VIP readdressed, a network deleted and re-created under its
// id with another subnet, a node DOWN and back — each leaves every agent
// holding exactly the states computed afresh; and n3, which holds network
// a only through ingress, is sent a delta of it, not the whole state.
func TestNetworkDeltasHostileWrites(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4"}
	bridge := mkNet("c")
	bridge.Spec.Driver = "bridge"
	r := newStateRig(t, nodes, func(tx raftstore.WriteTx) error {
		for _, o := range []raftstore.Object{
			mkNet("a"), bridge,
			mkSvc("web", "", map[string]string{"a": "10.1.0.2/24"}, "a"),
			mkSvc("br", "dnsrr", nil, "c"),
			mkNetTask("w1", "web", "n1", stRunning, "a=10.1.0.11/24"),
			mkNetTask("w2", "web", "n2", stRunning, "a=10.1.0.12/24"),
			mkNetTask("w4", "web", "n4", stRunning, "a=10.1.0.14/24"),
			mkNetTask("w5", "web", "n1", stRunning, "a=10.1.0.15/24"),
			mkNetTask("b1", "br", "n1", stRunning, "c=10.3.0.11/24"),
			mkNetTask("b2", "br", "n2", stRunning, "c=10.3.0.12/24"),
		} {
			if err := tx.Create(o); err != nil {
				return err
			}
		}
		return nil
	})
	update := func(what string, fn func(tx raftstore.WriteTx) error) {
		t.Helper()
		if _, err := r.s.Update(context.Background(), fn); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		r.converge(t, what)
	}
	task := func(tx raftstore.WriteTx, id string, fn func(*shoalv1.Task)) error {
		cur, ok := raftstore.Get[*shoalv1.Task](tx, id)
		if !ok {
			return fmt.Errorf("no task %s", id)
		}
		c := proto.Clone(cur).(*shoalv1.Task)
		fn(c)
		return tx.Update(c)
	}
	// sentSince counts what node was sent of network id after message k:
	// whole states and deltas.
	sentSince := func(node, id string, k int) (whole, deltas int) {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, m := range r.got[node][k:] {
			for _, s := range m.GetNetworks() {
				if s.GetNetwork().GetMeta().GetId() == id {
					whole++
				}
			}
			for _, d := range m.GetDeltas() {
				if d.GetNetworkId() == id {
					deltas++
				}
			}
		}
		return whole, deltas
	}
	mark := func(node string) int {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.got[node])
	}

	update("w1 attached twice to a", func(tx raftstore.WriteTx) error {
		return task(tx, "w1", func(tk *shoalv1.Task) {
			tk.Networks = append(tk.Networks, &shoalv1.NetworkAttachment{NetworkId: "a", Address: "10.1.0.21/24", Mac: "m-w1b"})
		})
	})
	update("w2 healthy while w1 is there twice", func(tx raftstore.WriteTx) error {
		return task(tx, "w2", func(tk *shoalv1.Task) { tk.Status.Health = shoalv1.TaskHealth_TASK_HEALTH_HEALTHY })
	})
	update("w1 back to one attachment", func(tx raftstore.WriteTx) error {
		return task(tx, "w1", func(tk *shoalv1.Task) { tk.Networks = tk.Networks[:1] })
	})
	k1 := mark("n1")
	update("network a relabelled with w5 unhealthy in the same entry", func(tx raftstore.WriteTx) error {
		nw, _ := raftstore.Get[*shoalv1.Network](tx, "a")
		nw = proto.Clone(nw).(*shoalv1.Network)
		nw.Spec.Labels = map[string]string{"k": "v"}
		if err := tx.Update(nw); err != nil {
			return err
		}
		return task(tx, "w5", func(tk *shoalv1.Task) { tk.Status.Health = shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY })
	})
	if whole, deltas := sentSince("n1", "a", k1); whole != 1 || deltas != 0 {
		t.Fatalf("network a changed: n1 was sent %d whole states and %d deltas of it, want 1 whole", whole, deltas)
	}
	update("bridge task b1 moves from n1 to n2", func(tx raftstore.WriteTx) error {
		return task(tx, "b1", func(tk *shoalv1.Task) { tk.NodeId = "n2" })
	})
	update("bridge task b2 moves to n3", func(tx raftstore.WriteTx) error {
		return task(tx, "b2", func(tk *shoalv1.Task) { tk.NodeId = "n3" })
	})
	update("web publishes an ingress port (n3 takes part in a)", func(tx raftstore.WriteTx) error {
		svc, _ := raftstore.Get[*shoalv1.Service](tx, "web")
		svc = proto.Clone(svc).(*shoalv1.Service)
		svc.Spec.Endpoint.Ports = []*shoalv1.PortConfig{{PublishedPort: 8080, TargetPort: 80}}
		return tx.Update(svc)
	})
	k3 := mark("n3")
	update("w4 unhealthy (n3 holds a by ingress)", func(tx raftstore.WriteTx) error {
		return task(tx, "w4", func(tk *shoalv1.Task) { tk.Status.Health = shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY })
	})
	if whole, deltas := sentSince("n3", "a", k3); whole != 0 || deltas != 1 {
		t.Fatalf("an endpoint of a changed: n3 (ingress) was sent %d whole states and %d deltas of it, want 1 delta", whole, deltas)
	}
	update("web's VIP readdressed", func(tx raftstore.WriteTx) error {
		svc, _ := raftstore.Get[*shoalv1.Service](tx, "web")
		svc = proto.Clone(svc).(*shoalv1.Service)
		svc.Vips[0].Address = "10.1.0.3/24"
		return tx.Update(svc)
	})
	update("web's ingress port removed (n3 leaves a)", func(tx raftstore.WriteTx) error {
		svc, _ := raftstore.Get[*shoalv1.Service](tx, "web")
		svc = proto.Clone(svc).(*shoalv1.Service)
		svc.Spec.Endpoint.Ports = nil
		return tx.Update(svc)
	})
	update("network a deleted", func(tx raftstore.WriteTx) error { return tx.Delete(raftstore.KindNetwork, "a", 0) })
	update("network a re-created with another subnet", func(tx raftstore.WriteTx) error {
		nw := mkNet("a")
		nw.Subnet = "10.7.0.0/24"
		return tx.Create(nw)
	})
	update("w2 ends", func(tx raftstore.WriteTx) error {
		return task(tx, "w2", func(tk *shoalv1.Task) { tk.Status.State = stFailed })
	})
	nodeWrite(t, r.s, "n4", func(n *shoalv1.Node) { n.Status.State = shoalv1.NodeState_NODE_STATE_DOWN })
	r.converge(t, "n4 DOWN")
	nodeWrite(t, r.s, "n4", func(n *shoalv1.Node) { n.Status.State = ready })
	r.converge(t, "n4 back")
	update("w9 assigned to n3", func(tx raftstore.WriteTx) error {
		return tx.Create(mkNetTask("w9", "web", "n3", stAssigned, "a=10.7.0.19/24"))
	})
}

// TestNetworkDeltasWriteStorm: random writes (tasks created, moved, made
// healthy or not, ended; a task attached twice to one network; network a
// relabelled; web's alias changed and its ingress port toggled; a node's
// address changed) go to the store back to back, so that the sessions
// lag and coalesce them differently; after each round of 25, every agent
// — those taking deltas and those taking whole states — holds exactly
// the states computed afresh, and none was sent a delta it could not
// apply.
func TestNetworkDeltasWriteStorm(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4"}
	bridge := mkNet("c")
	bridge.Spec.Driver = "bridge"
	r := newStateRig(t, nodes, func(tx raftstore.WriteTx) error {
		for _, o := range []raftstore.Object{mkNet("a"), mkNet("b"), bridge,
			mkSvc("web", "", map[string]string{"a": "10.1.0.2/24", "b": "10.2.0.2/24"}, "a", "b"),
			mkSvc("br", "dnsrr", nil, "c")} {
			if err := tx.Create(o); err != nil {
				return err
			}
		}
		return nil
	})
	rng := rand.New(rand.NewPCG(16, 1))
	var ids []string
	seq := 0
	for round := range 6 {
		for range 25 {
			seq++
			_, err := r.s.Update(context.Background(), func(tx raftstore.WriteTx) error {
				pick := func() (*shoalv1.Task, bool) {
					if len(ids) == 0 {
						return nil, false
					}
					cur, ok := raftstore.Get[*shoalv1.Task](tx, ids[rng.IntN(len(ids))])
					if !ok {
						return nil, false
					}
					return proto.Clone(cur).(*shoalv1.Task), true
				}
				switch op := rng.IntN(10); op {
				case 0, 1, 2: // a task comes
					id := fmt.Sprintf("t%03d", seq)
					ids = append(ids, id)
					var atts []string
					if rng.IntN(4) == 0 {
						atts = append(atts, fmt.Sprintf("c=10.3.0.%d/24", seq%250+3))
						return tx.Create(mkNetTask(id, "br", nodes[rng.IntN(4)], stRunning, atts...))
					}
					atts = append(atts, fmt.Sprintf("a=10.1.%d.%d/16", seq/250, seq%250+3))
					if rng.IntN(2) == 0 {
						atts = append(atts, fmt.Sprintf("b=10.2.%d.%d/16", seq/250, seq%250+3))
					}
					return tx.Create(mkNetTask(id, "web", nodes[rng.IntN(4)], stRunning, atts...))
				case 3: // moves
					tk, ok := pick()
					if !ok {
						return nil
					}
					tk.NodeId = nodes[rng.IntN(4)]
					return tx.Update(tk)
				case 4: // health flips
					tk, ok := pick()
					if !ok {
						return nil
					}
					tk.Status.Health = shoalv1.TaskHealth(rng.IntN(3))
					return tx.Update(tk)
				case 5: // ends, or is being stopped
					tk, ok := pick()
					if !ok {
						return nil
					}
					if rng.IntN(2) == 0 {
						tk.Status.State = stFailed
					} else {
						tk.DesiredState = shoalv1.TaskState_TASK_STATE_SHUTDOWN
					}
					return tx.Update(tk)
				case 6: // attached twice to the network it is on
					tk, ok := pick()
					if !ok || len(tk.Networks) == 0 {
						return nil
					}
					tk.Networks = append(tk.Networks, &shoalv1.NetworkAttachment{NetworkId: tk.Networks[0].NetworkId,
						Address: fmt.Sprintf("10.9.%d.%d/16", seq/250, seq%250+3), Mac: "m-twice"})
					return tx.Update(tk)
				case 7: // network a relabelled
					nw, _ := raftstore.Get[*shoalv1.Network](tx, "a")
					nw = proto.Clone(nw).(*shoalv1.Network)
					nw.Spec.Labels = map[string]string{"seq": fmt.Sprint(seq)}
					return tx.Update(nw)
				case 8: // web's alias, or its ingress port toggled
					svc, _ := raftstore.Get[*shoalv1.Service](tx, "web")
					svc = proto.Clone(svc).(*shoalv1.Service)
					if rng.IntN(2) == 0 {
						svc.Spec.Task.Networks[0].Aliases = []string{fmt.Sprint("alias", seq)}
					} else if len(svc.Spec.Endpoint.Ports) == 0 {
						svc.Spec.Endpoint.Ports = []*shoalv1.PortConfig{{PublishedPort: 8080, TargetPort: 80}}
					} else {
						svc.Spec.Endpoint.Ports = nil
					}
					return tx.Update(svc)
				default: // a node's underlay address
					n, _ := raftstore.Get[*shoalv1.Node](tx, nodes[rng.IntN(4)])
					n = proto.Clone(n).(*shoalv1.Node)
					n.Status.Addr = fmt.Sprintf("192.168.251.%d:4243", rng.IntN(250)+1)
					return tx.Update(n)
				}
			})
			if err != nil {
				t.Fatalf("write %d: %v", seq, err)
			}
		}
		r.converge(t, fmt.Sprintf("round %d", round))
	}
	deltas := 0
	r.mu.Lock()
	for _, msgs := range r.got {
		for _, m := range msgs {
			deltas += len(m.GetDeltas())
		}
	}
	r.mu.Unlock()
	if deltas == 0 {
		t.Fatal("no delta was sent: the storm tested whole states only")
	}
}
