package controlapi

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// withoutSpecs is svc as a brief reply should carry it.
func withoutSpecs(svc *shoalv1.Service) *shoalv1.Service {
	out := proto.Clone(svc).(*shoalv1.Service)
	out.Spec, out.PreviousSpec = nil, nil
	return out
}

// untimed is svc without the meta's timestamps, which the store sets when
// it applies the write (a reply carries those of the version read, as it
// always did).
func untimed(svc *shoalv1.Service) *shoalv1.Service {
	out := proto.Clone(svc).(*shoalv1.Service)
	if out.Meta != nil {
		out.Meta.CreatedAt, out.Meta.UpdatedAt = nil, nil
	}
	return out
}

// A brief reply is the stored service without its two specs, for a create
// and for updates that change the task (a rollout starts: update_status
// set, spec_version bumped) and that do not; the default reply is still
// the whole service, and the store keeps the specs either way.
func TestBriefReplyIsTheStoredServiceWithoutSpecs(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	spec := func(image, label string) *shoalv1.ServiceSpec {
		return &shoalv1.ServiceSpec{Name: "web", Replicas: 1, Labels: map[string]string{"v": label},
			Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: image}}}
	}
	stored := func(id string) *shoalv1.Service {
		t.Helper()
		svc, ok := raftstore.Get[*shoalv1.Service](st.View(), id)
		if !ok || svc.GetSpec() == nil {
			t.Fatalf("service %s not stored whole: %v", id, svc)
		}
		return svc
	}
	brief := shoalv1.ServiceView_SERVICE_VIEW_BRIEF
	created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec("demo:1", "1"), View: brief})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetService().GetMeta().GetId()
	cur := stored(id)
	if want := untimed(withoutSpecs(cur)); !proto.Equal(untimed(created.GetService()), want) {
		t.Fatalf("brief create reply %v, want %v", created.GetService(), want)
	}
	steps := []struct {
		name  string
		spec  *shoalv1.ServiceSpec
		view  shoalv1.ServiceView
		whole bool
	}{
		{"label only, brief", spec("demo:1", "2"), brief, false},
		{"new task, brief", spec("demo:2", "3"), brief, false},
		{"label only, default", spec("demo:2", "4"), shoalv1.ServiceView_SERVICE_VIEW_FULL, true},
		{"new task, default", spec("demo:3", "5"), shoalv1.ServiceView_SERVICE_VIEW_FULL, true},
	}
	for _, step := range steps {
		resp, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: id,
			Version: cur.GetMeta().GetVersion(), Spec: step.spec, View: step.view})
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		cur = stored(id)
		want := cur
		if !step.whole {
			want = withoutSpecs(cur)
		}
		if !proto.Equal(untimed(resp.GetService()), untimed(want)) {
			t.Errorf("%s: reply %v, want %v", step.name, resp.GetService(), want)
		}
	}
	if cur.GetSpecVersion() != 3 || cur.GetUpdateStatus() == nil {
		t.Errorf("the steps did not start rollouts: spec_version %d, update_status %v", cur.GetSpecVersion(), cur.GetUpdateStatus())
	}
}

// A view the manager does not know is refused with the field's path, and
// nothing is created or changed.
func TestUnknownViewIsRefusedBeforeAnyWrite(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	spec := func(label string) *shoalv1.ServiceSpec {
		return &shoalv1.ServiceSpec{Name: "web", Labels: map[string]string{"v": label},
			Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:1"}}}
	}
	const want = "view: unknown value 7"
	_, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec("1"), View: 7})
	wantCode(t, err, codes.InvalidArgument, want)
	if svcs := raftstore.List[*shoalv1.Service](st.View()); len(svcs) != 0 {
		t.Fatalf("a refused create stored %v", svcs)
	}
	created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec("1")})
	if err != nil {
		t.Fatal(err)
	}
	id, version := created.GetService().GetMeta().GetId(), created.GetService().GetMeta().GetVersion()
	_, err = s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: id, Version: version, Spec: spec("2"), View: 7})
	wantCode(t, err, codes.InvalidArgument, want)
	if got, _ := raftstore.Get[*shoalv1.Service](st.View(), id); got.GetMeta().GetVersion() != version || got.GetSpec().GetLabels()["v"] != "1" {
		t.Fatalf("a refused update changed the service: %v", got)
	}
}

// BenchmarkUpdateServiceReply: the bench's write's reply as gRPC's codec
// encodes it (size, then marshal), whole and brief; bytes/op is its size.
func BenchmarkUpdateServiceReply(b *testing.B) {
	s, _ := newServer(b)
	ctx := context.Background()
	label := strings.Repeat("x", 100)
	spec := func() *shoalv1.ServiceSpec {
		return &shoalv1.ServiceSpec{Name: "bench-0000", Labels: map[string]string{"bench": label},
			Mode: shoalv1.ServiceMode_SERVICE_MODE_REPLICATED,
			Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "shoal-bench:none", Command: []string{"/bin/true"}}}}
	}
	created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec()})
	if err != nil {
		b.Fatal(err)
	}
	version := created.GetService().GetMeta().GetVersion()
	for _, view := range []shoalv1.ServiceView{shoalv1.ServiceView_SERVICE_VIEW_FULL, shoalv1.ServiceView_SERVICE_VIEW_BRIEF} {
		resp, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: created.GetService().GetMeta().GetId(),
			Version: version, Spec: spec(), View: view})
		if err != nil {
			b.Fatal(err)
		}
		version = resp.GetService().GetMeta().GetVersion()
		b.Run(view.String(), func(b *testing.B) {
			b.SetBytes(int64(proto.Size(resp)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := (proto.MarshalOptions{UseCachedSize: true}).Marshal(resp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
