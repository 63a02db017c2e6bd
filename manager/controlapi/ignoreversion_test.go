package controlapi

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// racingCtx runs race once, the first time the store asks for the call's
// deadline: raftstore.Store.Update does so after the handler's
// transaction has read the store and before the entry is proposed, so
// race commits a write between the handler's read and its write, as a
// concurrent writer may.
type racingCtx struct {
	context.Context
	once sync.Once
	race func()
	ran  bool
}

func (c *racingCtx) Deadline() (time.Time, bool) {
	c.once.Do(func() { c.race(); c.ran = true })
	return c.Context.Deadline()
}

// An UpdateService with ignore_version overwrites the spec, but not what
// other writers changed since the handler read the service: a concurrent
// update's spec_version is not reused for another task (the orchestrator
// replaces tasks by spec_version, so a task of the same version is never
// replaced), and the fields the managers own (here the allocator's VIPs)
// are kept.
func TestUpdateServiceIgnoreVersionKeepsConcurrentWrites(t *testing.T) {
	spec := func(image string) *shoalv1.ServiceSpec {
		return &shoalv1.ServiceSpec{Name: "web", Replicas: 1, Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: image}}}
	}
	for name, tc := range map[string]struct {
		race  func(t *testing.T, s *Server, st *raftstore.Store, id string)
		check func(t *testing.T, got *shoalv1.Service)
	}{
		"another update": {
			race: func(t *testing.T, s *Server, _ *raftstore.Store, id string) {
				if _, err := s.UpdateService(context.Background(), &shoalv1.UpdateServiceRequest{ServiceId: id, IgnoreVersion: true, Spec: spec("demo:3")}); err != nil {
					t.Error(err)
				}
			},
			check: func(t *testing.T, got *shoalv1.Service) {
				// demo:1 was 1, the racing demo:3 took 2: demo:2 is 3.
				if got.GetSpecVersion() != 3 {
					t.Errorf("spec_version %d for the last of three task specs, want 3 (a version per task)", got.GetSpecVersion())
				}
			},
		},
		"the allocator's vips": {
			race: func(t *testing.T, _ *Server, st *raftstore.Store, id string) {
				if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error {
					cur, _ := raftstore.Get[*shoalv1.Service](tx, id)
					c := proto.Clone(cur).(*shoalv1.Service)
					c.Vips = []*shoalv1.ServiceVIP{{NetworkId: "net1", Address: "10.0.0.2/24"}}
					return tx.Update(c)
				}); err != nil {
					t.Error(err)
				}
			},
			check: func(t *testing.T, got *shoalv1.Service) {
				if len(got.GetVips()) != 1 {
					t.Errorf("vips %v: the allocator's write was overwritten", got.GetVips())
				}
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			s, st := newServer(t)
			created, err := s.CreateService(context.Background(), &shoalv1.CreateServiceRequest{Spec: spec("demo:1")})
			if err != nil {
				t.Fatal(err)
			}
			id := created.GetService().GetMeta().GetId()
			ctx := &racingCtx{Context: context.Background(), race: func() { tc.race(t, s, st, id) }}
			if _, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: id, IgnoreVersion: true, Spec: spec("demo:2")}); err != nil {
				t.Fatal(err)
			}
			if !ctx.ran {
				t.Fatal("the concurrent write never ran")
			}
			got, _ := raftstore.Get[*shoalv1.Service](st.View(), id)
			if img := got.GetSpec().GetTask().GetContainer().GetImage(); img != "demo:2" {
				t.Errorf("image %q, want the last writer's demo:2", img)
			}
			tc.check(t, got)
		})
	}
}

// An UpdateNode with ignore_version overwrites the node's spec, but not
// what other writers changed since the handler read the node: here a
// certificate renewal's serial (going back to the old serial would refuse
// the node's new certificate and accept its old one again).
func TestUpdateNodeIgnoreVersionKeepsConcurrentWrites(t *testing.T) {
	s, st := newServer(t)
	addNode(t, st, "w1", shoalv1.NodeRole_NODE_ROLE_WORKER, shoalv1.NodeState_NODE_STATE_READY)
	ctx := &racingCtx{Context: context.Background(), race: func() {
		if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error {
			cur, _ := raftstore.Get[*shoalv1.Node](tx, "w1")
			c := proto.Clone(cur).(*shoalv1.Node)
			c.PreviousCertSerial, c.CertSerial = c.CertSerial, "renewed"
			return tx.Update(c)
		}); err != nil {
			t.Error(err)
		}
	}}
	if _, err := s.UpdateNode(ctx, &shoalv1.UpdateNodeRequest{NodeId: "w1", IgnoreVersion: true,
		Spec: &shoalv1.NodeSpec{Name: "w1", DesiredRole: shoalv1.NodeRole_NODE_ROLE_WORKER, Availability: shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN}}); err != nil {
		t.Fatal(err)
	}
	if !ctx.ran {
		t.Fatal("the concurrent write never ran")
	}
	got, _ := raftstore.Get[*shoalv1.Node](st.View(), "w1")
	if got.GetSpec().GetAvailability() != shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN {
		t.Errorf("availability %v, want the update's drain", got.GetSpec().GetAvailability())
	}
	if got.GetCertSerial() != "renewed" {
		t.Errorf("cert_serial %q: the renewal was overwritten", got.GetCertSerial())
	}
}
