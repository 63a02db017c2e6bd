package controlapi

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestRebalanceService: it sets rebalance_requested on a replicated
// service (and asking twice is harmless), refuses other modes and unknown
// or missing ids, and leaves the spec and its version alone.
func TestRebalanceService(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	create := func(name string, mode shoalv1.ServiceMode, replicas int64) *shoalv1.Service {
		t.Helper()
		r, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: &shoalv1.ServiceSpec{Name: name, Mode: mode, Replicas: replicas,
			Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:latest"}}}})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetService()
	}
	web := create("web", shoalv1.ServiceMode_SERVICE_MODE_REPLICATED, 3)
	for i := 0; i < 2; i++ {
		resp, err := s.RebalanceService(ctx, &shoalv1.RebalanceServiceRequest{ServiceId: web.GetMeta().GetId()})
		if err != nil {
			t.Fatalf("rebalance #%d: %v", i+1, err)
		}
		if !resp.GetService().GetRebalanceRequested() || resp.GetService().GetSpec().GetName() != "web" {
			t.Fatalf("rebalance #%d answered %v", i+1, resp.GetService())
		}
	}
	stored, _ := raftstore.Get[*shoalv1.Service](st.View(), web.GetMeta().GetId())
	if !stored.GetRebalanceRequested() {
		t.Fatal("rebalance_requested not stored")
	}
	if stored.GetSpecVersion() != web.GetSpecVersion() || stored.GetSpec().GetReplicas() != 3 {
		t.Fatalf("the spec changed: version %d, replicas %d", stored.GetSpecVersion(), stored.GetSpec().GetReplicas())
	}

	g := create("agent", shoalv1.ServiceMode_SERVICE_MODE_GLOBAL, 0)
	_, err := s.RebalanceService(ctx, &shoalv1.RebalanceServiceRequest{ServiceId: g.GetMeta().GetId()})
	wantCode(t, err, codes.FailedPrecondition, `service "agent" is global: only replicated services are rebalanced`)
	if stored, _ := raftstore.Get[*shoalv1.Service](st.View(), g.GetMeta().GetId()); stored.GetRebalanceRequested() {
		t.Fatal("a refused rebalance was stored")
	}
	_, err = s.RebalanceService(ctx, &shoalv1.RebalanceServiceRequest{ServiceId: "nope"})
	wantCode(t, err, codes.NotFound, `service "nope"`)
	_, err = s.RebalanceService(ctx, &shoalv1.RebalanceServiceRequest{})
	wantCode(t, err, codes.InvalidArgument, "service_id: required")
}
