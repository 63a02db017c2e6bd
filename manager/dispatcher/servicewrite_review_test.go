package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// stateRig is a leader's dispatcher with real gRPC sessions whose agents
// apply the Networks messages they receive (fakeAgent), so a test can
// check what each agent holds against the states computed afresh. Every
// other node's agent takes network deltas (as today's agents do), the
// rest whole states only (an agent of an earlier release).
type stateRig struct {
	s      *raftstore.Store
	d      *Dispatcher
	nodes  []string
	mu     sync.Mutex // guards agents and errs
	agents map[string]fakeAgent
	errs   []error                        // what agents could not apply
	got    map[string][]*shoalv1.Networks // every Networks message, by node
}

func newStateRig(t *testing.T, nodes []string, setup func(raftstore.WriteTx) error) *stateRig {
	t.Helper()
	s := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if _, err := s.Update(ctx, func(tx raftstore.WriteTx) error {
		for i, n := range nodes {
			if err := tx.Create(mkNode(n, fmt.Sprintf("192.168.250.%d:4243", i+1), ready)); err != nil {
				return err
			}
		}
		return setup(tx)
	}); err != nil {
		t.Fatal(err)
	}
	r := &stateRig{s: s, nodes: nodes, agents: map[string]fakeAgent{}, got: map[string][]*shoalv1.Networks{}}
	r.d = New(Config{Store: s, Logger: slog.New(slog.DiscardHandler), Managers: func() []string { return []string{"solo:4242"} }})
	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- r.d.Run(runCtx) }()
	poll(t, "the dispatcher runs", func() bool {
		r.d.mu.Lock()
		defer r.d.mu.Unlock()
		return r.d.runCtx != nil
	})
	t.Cleanup(func() { stopRun(); <-runDone })
	conn := serveDispatcher(t, r.d, rigIdentity)
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, n := range nodes {
		r.agents[n] = fakeAgent{}
	}
	for i, n := range nodes {
		welcomed := make(chan error, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.agent(ctx, conn, n, i%2 == 0, welcomed)
		}()
		if err := <-welcomed; err != nil {
			t.Fatal(err)
		}
	}
	r.converge(t, "the first states")
	return r
}

// agent is node's session (runTestAgent), applying every Networks
// message; its heartbeats keep any node from going DOWN, which would wake
// every session.
func (r *stateRig) agent(ctx context.Context, conn *grpc.ClientConn, node string, deltas bool, welcomed chan<- error) {
	runTestAgent(ctx, conn, node, deltas, welcomed, func(n *shoalv1.Networks) {
		if !deltas && len(n.GetDeltas()) > 0 {
			r.fail(fmt.Errorf("%s: sent %d deltas, but its hello did not take them", node, len(n.GetDeltas())))
		}
		r.mu.Lock()
		r.got[node] = append(r.got[node], n)
		err := r.agents[node].apply([]*shoalv1.Networks{n})
		r.mu.Unlock()
		if err != nil {
			r.fail(fmt.Errorf("%s: %w", node, err))
		}
	})
}

func (r *stateRig) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

// converge waits until every agent holds exactly the states computed
// afresh from the store's current view.
func (r *stateRig) converge(t *testing.T, what string) {
	t.Helper()
	var last string
	deadlineHit := true
	defer func() {
		if deadlineHit {
			t.Logf("%s: last difference: %s", what, last)
		}
	}()
	poll(t, what+": every agent holds the current states", func() bool {
		want := AllNodeNetworks(r.s.View())
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.errs) > 0 {
			t.Fatalf("%s: %v", what, errors.Join(r.errs...))
		}
		for _, n := range r.nodes {
			if d := r.agents[n].agrees(want[n]); d != "" {
				last = n + ": " + d
				return false
			}
		}
		return true
	})
	deadlineHit = false
}

// write applies fn to a clone of service id and stores it (a whole
// update, as UpdateService or the orchestrator writes).
func (r *stateRig) write(t *testing.T, id string, fn func(*shoalv1.Service)) {
	t.Helper()
	if _, err := r.s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		cur, _ := raftstore.Get[*shoalv1.Service](tx, id)
		svc := proto.Clone(cur).(*shoalv1.Service)
		fn(svc)
		return tx.Update(svc)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestOperatorServiceWritesReachEveryAgent: an operator's service writes,
// one after the other, over real sessions — each that changes a network
// state (an alias, the name, ports in ingress mode widening the network
// to every node and back to host mode, the endpoint mode, a network added
// to and removed from the spec, a VIP moved by a patch that changes no
// spec field, the service deleted and re-created under its id and name
// with another alias) reaches every agent, and those that change none
// (labels, replicas, the image, a rollout's update status) leave every
// agent as it is; after each, every agent holds exactly the states
// computed afresh.
func TestOperatorServiceWritesReachEveryAgent(t *testing.T) {
	nodes := []string{"n1", "n2", "n3"}
	r := newStateRig(t, nodes, func(tx raftstore.WriteTx) error {
		for _, o := range []raftstore.Object{
			mkNet("a"), mkNet("b"),
			mkSvc("web", "", map[string]string{"a": "10.1.0.2/24"}, "a"),
			mkSvc("db", "", map[string]string{"b": "10.2.0.2/24"}, "b"),
			mkNetTask("w1", "web", "n1", stRunning, "a=10.1.0.3/24"),
			mkNetTask("d2", "db", "n2", stRunning, "b=10.2.0.3/24"),
		} {
			if err := tx.Create(o); err != nil {
				return err
			}
		}
		return nil
	})
	web := func(what string, fn func(*shoalv1.Service)) {
		r.write(t, "web", fn)
		r.converge(t, what)
	}
	web("labels", func(s *shoalv1.Service) { s.Spec.Labels = map[string]string{"k": "v"} })
	web("replicas", func(s *shoalv1.Service) { s.Spec.Replicas = 4 })
	web("image", func(s *shoalv1.Service) {
		s.Spec.Task.Container = &shoalv1.ContainerSpec{Image: "demo:2"}
		s.SpecVersion++
	})
	web("update status", func(s *shoalv1.Service) {
		s.UpdateStatus = &shoalv1.UpdateStatus{State: shoalv1.UpdateState_UPDATE_STATE_UPDATING}
	})
	web("alias", func(s *shoalv1.Service) { s.Spec.Task.Networks[0].Aliases = []string{"www"} })
	web("rename", func(s *shoalv1.Service) { s.Spec.Name = "frontend" })
	web("ingress port", func(s *shoalv1.Service) {
		s.Spec.Endpoint.Ports = []*shoalv1.PortConfig{{Protocol: "tcp", TargetPort: 80, PublishedPort: 8080}}
	})
	if got := len(AllNodeNetworks(r.s.View())["n3"]); got != 1 {
		t.Fatalf("n3 takes part in %d networks after the ingress port, want 1 (the test's premise)", got)
	}
	web("host-mode port", func(s *shoalv1.Service) { s.Spec.Endpoint.Ports[0].PublishMode = "host" })
	web("dnsrr", func(s *shoalv1.Service) { s.Spec.Endpoint.Mode = "dnsrr" })
	web("back to vip", func(s *shoalv1.Service) { s.Spec.Endpoint.Mode = "vip" })
	web("network b added", func(s *shoalv1.Service) {
		s.Spec.Task.Networks = append(s.Spec.Task.Networks, &shoalv1.NetworkAttachmentConfig{Target: "b", Aliases: []string{"w-on-b"}})
		s.Vips = append(s.Vips, &shoalv1.ServiceVIP{NetworkId: "b", Address: "10.2.0.9/24"})
	})
	web("network b removed", func(s *shoalv1.Service) {
		s.Spec.Task.Networks = s.Spec.Task.Networks[:1]
		s.Vips = s.Vips[:1]
	})

	// A VIP moved by a patch (PatchService shares the spec's task and
	// endpoint: only the VIPs tell the versions apart).
	cur, _ := raftstore.Get[*shoalv1.Service](r.s.View(), "web")
	if _, err := r.s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		svc := &shoalv1.Service{Meta: &shoalv1.Meta{Id: "web", Version: cur.GetMeta().GetVersion()}, PreviousSpec: cur.GetSpec(),
			SpecVersion: cur.GetSpecVersion(), Vips: []*shoalv1.ServiceVIP{{NetworkId: "a", Address: "10.1.0.77/24"}}}
		return tx.PatchService(svc, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"k": "w"}})
	}); err != nil {
		t.Fatal(err)
	}
	r.converge(t, "VIP moved by a patch")

	// Deleted and re-created under the same id and name, with another
	// alias and VIP, in two entries and then in one.
	recreate := func(alias, vip string) *shoalv1.Service {
		s := mkSvc("web", "", map[string]string{"a": vip}, "a")
		s.Spec.Name = "frontend"
		s.Spec.Task.Networks[0].Aliases = []string{alias}
		return s
	}
	if _, err := r.s.Update(context.Background(), func(tx raftstore.WriteTx) error { return tx.Delete(raftstore.KindService, "web", 0) }); err != nil {
		t.Fatal(err)
	}
	r.converge(t, "deleted")
	if _, err := r.s.Update(context.Background(), func(tx raftstore.WriteTx) error { return tx.Create(recreate("again", "10.1.0.50/24")) }); err != nil {
		t.Fatal(err)
	}
	r.converge(t, "re-created")
	if _, err := r.s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		if err := tx.Delete(raftstore.KindService, "web", 0); err != nil {
			return err
		}
		return tx.Create(recreate("once-more", "10.1.0.51/24"))
	}); err != nil {
		t.Fatal(err)
	}
	r.converge(t, "deleted and re-created in one entry")
}

// TestServiceBeforeTheFirstNetwork: services written while the cluster has
// no network (their events skipped) are in the states once a network
// comes, and a service's ingress port written before the network widens
// it to every node once it exists.
func TestServiceBeforeTheFirstNetwork(t *testing.T) {
	nodes := []string{"n1", "n2"}
	r := newStateRig(t, nodes, func(tx raftstore.WriteTx) error {
		return tx.Create(mkSvc("web", "", map[string]string{"a": "10.1.0.2/24"}, "a"))
	})
	r.write(t, "web", func(s *shoalv1.Service) {
		s.Spec.Endpoint.Ports = []*shoalv1.PortConfig{{Protocol: "tcp", TargetPort: 80, PublishedPort: 8080}}
	})
	r.write(t, "web", func(s *shoalv1.Service) { s.Spec.Task.Networks[0].Aliases = []string{"www"} })
	if _, err := r.s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		if err := tx.Create(mkNet("a")); err != nil {
			return err
		}
		return tx.Create(mkNetTask("w1", "web", "n1", stRunning, "a=10.1.0.3/24"))
	}); err != nil {
		t.Fatal(err)
	}
	r.converge(t, "the first network")
	if got := len(AllNodeNetworks(r.s.View())["n2"]); got != 1 {
		t.Fatalf("n2 takes part in %d networks, want 1 (the ingress port)", got)
	}
	r.write(t, "web", func(s *shoalv1.Service) { s.Spec.Task.Networks[0].Aliases = []string{"w3"} })
	r.converge(t, "an alias after the first network")
}
