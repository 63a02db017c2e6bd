package main

import (
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// A writer asks for the brief reply, names the version it was created at,
// and can set its label on a spec that came back without labels.
func TestBenchUpdateRequestAsksBriefReply(t *testing.T) {
	spec := benchServiceSpec("bench-0001", "v")
	spec.Labels = nil
	req := benchUpdateRequest(&shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1", Version: 9}, Spec: spec})
	if req.GetView() != shoalv1.ServiceView_SERVICE_VIEW_BRIEF {
		t.Errorf("view %s, want SERVICE_VIEW_BRIEF", req.GetView())
	}
	if req.GetServiceId() != "s1" || req.GetVersion() != 9 || req.GetSpec() != spec {
		t.Errorf("request %v does not name service s1 at version 9 with its spec", req)
	}
	req.Spec.Labels["bench"] = "x" // a nil map would panic here
}
