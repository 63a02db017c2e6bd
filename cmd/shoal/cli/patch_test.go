package cli

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// PatchService of the fake manager: Unimplemented (an earlier release)
// unless patchable; else recorded and applied to the canned service.
func (f *fakeManager) PatchService(_ context.Context, req *shoalv1.PatchServiceRequest) (*shoalv1.PatchServiceResponse, error) {
	f.cmu.Lock()
	defer f.cmu.Unlock()
	if !f.patchable {
		return nil, status.Error(codes.Unimplemented, "method PatchService not implemented")
	}
	f.patches = append(f.patches, req)
	s := f.findService(req.GetServiceId())
	if s == nil {
		return nil, errdefs.NotFoundf("service %q: not found", req.GetServiceId())
	}
	if req.Replicas != nil && s.GetSpec().GetMode() != shoalv1.ServiceMode_SERVICE_MODE_REPLICATED {
		return nil, errdefs.InvalidArgumentf("replicas: only for replicated services, not global")
	}
	s = proto.Clone(s).(*shoalv1.Service)
	for _, k := range req.GetLabelsRm() {
		delete(s.Spec.Labels, k)
	}
	if len(req.GetLabelsAdd()) > 0 && s.Spec.Labels == nil {
		s.Spec.Labels = map[string]string{}
	}
	maps.Copy(s.Spec.Labels, req.GetLabelsAdd())
	if req.Replicas != nil {
		s.Spec.Replicas = req.GetReplicas()
	}
	return &shoalv1.PatchServiceResponse{Service: s}, nil
}

// TestServiceUpdatePatches: an update whose only changes are labels and
// replicas, and every scale, is one PatchService naming the service as
// given; any other flag keeps the read-modify-write; a manager without
// PatchService gets the read-modify-write; the patch's errors are the
// command's.
func TestServiceUpdatePatches(t *testing.T) {
	c := newCLICluster(t)
	c.mgr.services = []*shoalv1.Service{
		{Meta: &shoalv1.Meta{Id: "svcweb", Version: 7}, SpecVersion: 1,
			Spec: &shoalv1.ServiceSpec{Name: "web", Replicas: 1, Labels: map[string]string{"b": "2"}, Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:1"}}}},
		{Meta: &shoalv1.Meta{Id: "svcglob", Version: 8}, SpecVersion: 1,
			Spec: &shoalv1.ServiceSpec{Name: "glob", Mode: shoalv1.ServiceMode_SERVICE_MODE_GLOBAL, Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:1"}}}},
	}
	r3 := int64(3)
	for _, tc := range []struct {
		name      string
		patchable bool
		args      []string
		patch     *shoalv1.PatchServiceRequest // nil: no patch
		update    func(*shoalv1.UpdateServiceRequest) bool
		errPart   string
	}{
		{"labels", true, []string{"service", "update", "--detach", "--label-add", "a=1", "--label-rm", "b", "--label-rm", "a", "web"},
			&shoalv1.PatchServiceRequest{ServiceId: "web", LabelsAdd: map[string]string{"a": "1"}, LabelsRm: []string{"b"}}, nil, ""},
		{"replicas and a label", true, []string{"service", "update", "--detach", "--replicas", "3", "--label-add", "a=1", "svcweb"},
			&shoalv1.PatchServiceRequest{ServiceId: "svcweb", LabelsAdd: map[string]string{"a": "1"}, Replicas: &r3}, nil, ""},
		{"scale", true, []string{"service", "scale", "--detach", "web=3"},
			&shoalv1.PatchServiceRequest{ServiceId: "web", Replicas: &r3}, nil, ""},
		{"another flag", true, []string{"service", "update", "--detach", "--label-add", "a=1", "--image", "demo:2", "--no-resolve-image", "web"}, nil,
			func(u *shoalv1.UpdateServiceRequest) bool {
				return u.GetVersion() == 7 && u.GetSpec().GetLabels()["a"] == "1" && u.GetSpec().GetTask().GetContainer().GetImage() == "demo:2"
			}, ""},
		{"scale, old manager", false, []string{"service", "scale", "--detach", "web=3"}, nil,
			func(u *shoalv1.UpdateServiceRequest) bool {
				return u.GetVersion() == 7 && u.GetSpec().GetReplicas() == 3
			}, ""},
		{"labels, old manager", false, []string{"service", "update", "--detach", "--label-add", "a=1", "web"}, nil,
			func(u *shoalv1.UpdateServiceRequest) bool {
				return u.GetVersion() == 7 && u.GetSpec().GetLabels()["a"] == "1" && u.GetSpec().GetLabels()["b"] == "2"
			}, ""},
		{"scale a global service", true, []string{"service", "scale", "--detach", "glob=3"},
			&shoalv1.PatchServiceRequest{ServiceId: "glob", Replicas: &r3}, nil, "replicas: only for replicated services"},
		{"scale a global service, old manager", false, []string{"service", "scale", "--detach", "glob=3"}, nil, nil, "glob: only replicated services can be scaled"},
		{"a bad label", true, []string{"service", "update", "--detach", "--label-add", "novalue", "web"}, nil, nil, "--label-add"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.mgr.cmu.Lock()
			c.mgr.patchable, c.mgr.patches, c.mgr.updates = tc.patchable, nil, nil
			c.mgr.cmu.Unlock()
			code, out, errOut := c.run(tc.args...)
			if tc.errPart != "" {
				if code == 0 || !strings.Contains(errOut, tc.errPart) {
					t.Fatalf("exit %d, stderr %q, want an error with %q", code, errOut, tc.errPart)
				}
			} else if code != 0 || !strings.HasPrefix(out, "web\n") {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
			}
			c.mgr.cmu.Lock()
			defer c.mgr.cmu.Unlock()
			switch {
			case tc.patch != nil:
				if len(c.mgr.patches) != 1 || len(c.mgr.updates) != 0 {
					t.Fatalf("%d patches, %d updates", len(c.mgr.patches), len(c.mgr.updates))
				}
				got := c.mgr.patches[0]
				slices.Sort(got.LabelsRm)
				if !proto.Equal(got, tc.patch) {
					t.Fatalf("patch %v, want %v", got, tc.patch)
				}
			case tc.update != nil:
				if len(c.mgr.patches) != 0 || len(c.mgr.updates) != 1 || !tc.update(c.mgr.updates[0]) {
					t.Fatalf("%d patches, updates %v", len(c.mgr.patches), c.mgr.updates)
				}
			default:
				if len(c.mgr.patches) != 0 || len(c.mgr.updates) != 0 {
					t.Fatalf("%d patches, %d updates", len(c.mgr.patches), len(c.mgr.updates))
				}
			}
		})
	}
}
