package controlapi

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestSpreadPreferenceOnUnknownLabel: a spread preference over a label no
// node has is refused at create and update, naming the field; once a node
// has the label it is accepted, and an update of another field is not
// refused because nodes lost the label since.
func TestSpreadPreferenceOnUnknownLabel(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	addNode(t, st, "n1", shoalv1.NodeRole_NODE_ROLE_WORKER, shoalv1.NodeState_NODE_STATE_READY)
	spec := func(image string, prefs ...string) *shoalv1.ServiceSpec {
		return &shoalv1.ServiceSpec{Name: "web", Replicas: 2, Task: &shoalv1.TaskSpec{
			Container: &shoalv1.ContainerSpec{Image: image},
			Placement: &shoalv1.Placement{Spread: prefs}}}
	}
	_, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec("demo:1", "node.labels.zone")})
	wantCode(t, err, codes.InvalidArgument, `spec.task.placement.spread[0]: no node has the label "zone"`)
	if len(raftstore.List[*shoalv1.Service](st.View())) != 0 {
		t.Fatal("a refused service was stored")
	}

	setLabel := func(v string) {
		t.Helper()
		if _, err := st.Update(ctx, func(tx raftstore.WriteTx) error {
			stored, ok := raftstore.Get[*shoalv1.Node](tx, "n1")
			if !ok {
				t.Fatal("node n1 not stored")
			}
			n := proto.Clone(stored).(*shoalv1.Node)
			n.Spec = &shoalv1.NodeSpec{Labels: map[string]string{}}
			if v != "" {
				n.Spec.Labels["zone"] = v
			}
			return tx.Update(n)
		}); err != nil {
			t.Fatal(err)
		}
	}
	setLabel("a")
	created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec("demo:1", "node.labels.zone")})
	if err != nil {
		t.Fatalf("label present: %v", err)
	}
	setLabel("")
	// The preference was there before: an image update still goes through.
	svc := created.GetService()
	up, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: svc.GetMeta().GetId(), Version: svc.GetMeta().GetVersion(), Spec: spec("demo:2", "node.labels.zone")})
	if err != nil {
		t.Fatalf("update keeping an existing preference: %v", err)
	}
	// A new one on a missing label is refused.
	svc = up.GetService()
	_, err = s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: svc.GetMeta().GetId(), Version: svc.GetMeta().GetVersion(), Spec: spec("demo:2", "node.labels.zone", "node.labels.rack")})
	wantCode(t, err, codes.InvalidArgument, `spec.task.placement.spread[1]: no node has the label "rack"`)
}
