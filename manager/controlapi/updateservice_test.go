package controlapi

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// UpdateService stores (and answers) the new spec with the defaults filled
// in, and the spec it replaced as previous_spec, whether the replaced spec
// travels in the raft entry or is taken from the stored service.
func TestUpdateServiceFillsDefaultsAndKeepsPreviousSpec(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	bare := func(label string) *shoalv1.ServiceSpec {
		return &shoalv1.ServiceSpec{Name: "web", Replicas: 1, Labels: map[string]string{"v": label},
			Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:latest"}}}
	}
	created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: bare("1")})
	if err != nil {
		t.Fatal(err)
	}
	prev := created.GetService()
	for _, label := range []string{"2", "3"} {
		resp, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: prev.GetMeta().GetId(),
			Version: prev.GetMeta().GetVersion(), Spec: bare(label)})
		if err != nil {
			t.Fatal(err)
		}
		want := fillDefaults(bare(label))
		if want.GetTask().GetRestart() == nil || want.GetUpdate() == nil || want.GetRollback() == nil || want.GetTask().GetContainer().GetStopGraceMs() == 0 {
			t.Fatalf("fillDefaults filled nothing: %v", want)
		}
		stored, ok := raftstore.Get[*shoalv1.Service](st.View(), prev.GetMeta().GetId())
		if !ok {
			t.Fatal("service gone")
		}
		for name, got := range map[string]*shoalv1.Service{"stored": stored, "response": resp.GetService()} {
			if !proto.Equal(got.GetSpec(), want) {
				t.Errorf("%s spec %v, want %v", name, got.GetSpec(), want)
			}
			if !proto.Equal(got.GetPreviousSpec(), prev.GetSpec()) {
				t.Errorf("%s previous_spec %v, want the replaced spec %v", name, got.GetPreviousSpec(), prev.GetSpec())
			}
		}
		if stored.GetMeta().GetVersion() != resp.GetService().GetMeta().GetVersion() {
			t.Errorf("stored version %d, response %d", stored.GetMeta().GetVersion(), resp.GetService().GetMeta().GetVersion())
		}
		prev = stored
	}
}
