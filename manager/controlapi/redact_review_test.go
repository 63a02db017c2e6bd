package controlapi

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// TestViewerReadSpecNotWrittenBack: a spec read with a viewer token
// (values redacted) and written back whole with an operator token is
// refused with the field path, and the stored values stay.
func TestViewerReadSpecNotWrittenBack(t *testing.T) {
	s, _ := newServer(t)
	spec := validSpec()
	spec.Name = "db"
	spec.Task.Container.Env = []string{"DB_PASSWORD=hunter2"}
	op := tokenCtx(trust.TokenOperator)
	if _, err := s.CreateService(op, &shoalv1.CreateServiceRequest{Spec: spec}); err != nil {
		t.Fatal(err)
	}
	read, err := s.GetService(tokenCtx(trust.TokenViewer), &shoalv1.GetServiceRequest{Ref: "db"})
	if err != nil {
		t.Fatal(err)
	}
	back := proto.Clone(read.GetService().GetSpec()).(*shoalv1.ServiceSpec)
	back.Task.Container.Args = []string{"changed"}
	_, err = s.UpdateService(op, &shoalv1.UpdateServiceRequest{ServiceId: read.GetService().GetMeta().GetId(),
		Version: read.GetService().GetMeta().GetVersion(), Spec: back})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "spec.task.container.env[0]") ||
		!strings.Contains(err.Error(), RedactedValue) {
		t.Fatalf("UpdateService with a viewer's redacted spec: %v", err)
	}
	now, err := s.GetService(op, &shoalv1.GetServiceRequest{Ref: "db"})
	if err != nil {
		t.Fatal(err)
	}
	if env := now.GetService().GetSpec().GetTask().GetContainer().GetEnv(); !slices.Equal(env, []string{"DB_PASSWORD=hunter2"}) {
		t.Errorf("stored env %q", env)
	}
}
