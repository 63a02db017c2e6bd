package main

import (
	"strings"
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

// A patch writer names its service, the version it was created at, its
// label alone, and asks for the brief reply.
func TestBenchPatchRequest(t *testing.T) {
	req := benchPatchRequest(&shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1", Version: 9}, Spec: benchServiceSpec("bench-0001", "v")})
	if req.GetServiceId() != "s1" || req.GetVersion() != 9 || len(req.GetLabelsAdd()) != 1 || req.GetLabelsAdd()["bench"] != "v" ||
		req.Replicas != nil || len(req.GetLabelsRm()) != 0 || req.GetView() != shoalv1.ServiceView_SERVICE_VIEW_BRIEF {
		t.Errorf("request %v", req)
	}
}

// -write chooses shoal's write (patch by default) and the report names it.
func TestWriteFlag(t *testing.T) {
	for args, want := range map[string]string{"": "PatchService", "-write patch": "PatchService", "-write update": "UpdateService"} {
		o, err := parseFlags(strings.Fields(args))
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		r := newReport(o)
		r.Cells = []cellResult{{System: "shoal", Members: 3, Concurrency: 1}}
		var md strings.Builder
		r.markdown(&md)
		if !strings.Contains(md.String(), "shoal: "+want+" ") {
			t.Errorf("%q: the report does not name %s:\n%s", args, want, md.String())
		}
	}
	if _, err := parseFlags([]string{"-write", "put"}); err == nil || !strings.Contains(err.Error(), "-write") {
		t.Errorf("-write put: %v", err)
	}
}
