package controlapi

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestMaxReplicas: create and update above the cluster setting max_replicas
// (default 100,000) are refused naming the field and the setting; at the
// cap they pass; a lowered setting applies at once.
func TestMaxReplicas(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	spec := func(name string, replicas int64) *shoalv1.ServiceSpec {
		return &shoalv1.ServiceSpec{Name: name, Replicas: replicas,
			Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:latest"}}}
	}

	_, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec("huge", DefaultMaxReplicas+1)})
	wantCode(t, err, codes.InvalidArgument, "spec.replicas: 100001 is above the cluster setting max-replicas = 100000")
	if _, ok := raftstore.Get[*shoalv1.Service](st.View(), "huge"); ok || len(raftstore.List[*shoalv1.Service](st.View())) != 0 {
		t.Fatal("a refused service was stored")
	}
	created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec("web", DefaultMaxReplicas)})
	if err != nil {
		t.Fatalf("create at the cap: %v", err)
	}
	svc := created.GetService()
	_, err = s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: svc.GetMeta().GetId(),
		Version: svc.GetMeta().GetVersion(), Spec: spec("web", DefaultMaxReplicas+1)})
	wantCode(t, err, codes.InvalidArgument, "spec.replicas: 100001 is above the cluster setting max-replicas = 100000")

	// Lower the setting: 11 is refused, 10 passes.
	if _, err := st.Update(ctx, func(tx raftstore.WriteTx) error {
		c, _ := raftstore.ClusterOf(tx)
		c = proto.Clone(c).(*shoalv1.Cluster)
		c.Settings = &shoalv1.ClusterSettings{MaxReplicas: 10}
		return tx.Update(c)
	}); err != nil {
		t.Fatal(err)
	}
	_, err = s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: svc.GetMeta().GetId(),
		Version: svc.GetMeta().GetVersion(), Spec: spec("web", 11)})
	wantCode(t, err, codes.InvalidArgument, "max-replicas = 10")
	if _, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: svc.GetMeta().GetId(),
		Version: svc.GetMeta().GetVersion(), Spec: spec("web", 10)}); err != nil {
		t.Fatalf("update to the lowered cap: %v", err)
	}
}

// TestTheClusterIsClusterOf: the cluster object looked up by its known id
// is the one ClusterOf lists, in a view after the cluster object changed
// too; an id not found (a store of another cluster) falls back to the
// listing; and the lookup allocates less than the listing (it is what
// every UpdateService pays for the max-replicas setting).
func TestTheClusterIsClusterOf(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	same := func(what string) {
		t.Helper()
		v := st.View()
		want, wok := raftstore.ClusterOf(v)
		got, ok := s.theCluster(v)
		if got != want || ok != wok || !ok {
			t.Fatalf("%s: theCluster %v (%v), ClusterOf %v (%v)", what, got, ok, want, wok)
		}
	}
	same("first read")
	same("by id")
	if _, err := st.Update(ctx, func(tx raftstore.WriteTx) error {
		c, _ := raftstore.ClusterOf(tx)
		c = proto.Clone(c).(*shoalv1.Cluster)
		c.Settings = &shoalv1.ClusterSettings{MaxReplicas: 10}
		return tx.Update(c)
	}); err != nil {
		t.Fatal(err)
	}
	same("after the cluster object changed")
	other := "another-cluster"
	s.clusterID.Store(&other)
	same("an id not in the store")
	v := st.View()
	byID := testing.AllocsPerRun(200, func() { s.theCluster(v) })
	listed := testing.AllocsPerRun(200, func() { raftstore.ClusterOf(v) })
	if byID >= listed {
		t.Fatalf("theCluster: %.0f allocations, ClusterOf %.0f: the lookup by id should allocate less", byID, listed)
	}
}
