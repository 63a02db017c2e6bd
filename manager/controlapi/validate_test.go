package controlapi

import (
	"context"
	"github.com/shoal-dev/shoal/errdefs"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

func validSpec() *shoalv1.ServiceSpec {
	return &shoalv1.ServiceSpec{
		Name:     "web",
		Replicas: 3,
		Task:     &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:latest", Env: []string{"A=1"}}},
	}
}

func TestValidateServiceSpec(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(s *shoalv1.ServiceSpec)
		want   []string // substrings of the error; none = valid
	}{
		{"valid", func(*shoalv1.ServiceSpec) {}, nil},
		{"empty name", func(s *shoalv1.ServiceSpec) { s.Name = "" }, []string{"spec.name: required"}},
		{"bad name", func(s *shoalv1.ServiceSpec) { s.Name = "a b" }, []string{"spec.name", "not a valid name"}},
		{"negative replicas", func(s *shoalv1.ServiceSpec) { s.Replicas = -1 }, []string{"spec.replicas: must be >= 0, got -1"}},
		{"global with replicas", func(s *shoalv1.ServiceSpec) { s.Mode = shoalv1.ServiceMode_SERVICE_MODE_GLOBAL }, []string{"spec.replicas", "global"}},
		{"no image", func(s *shoalv1.ServiceSpec) { s.Task.Container.Image = "" }, []string{"spec.task.container.image: required"}},
		{"no task", func(s *shoalv1.ServiceSpec) { s.Task = nil }, []string{"spec.task.container.image: required"}},
		{"bad env", func(s *shoalv1.ServiceSpec) { s.Task.Container.Env = []string{"A=1", "NOVALUE"} }, []string{"spec.task.container.env[1]", "KEY=VALUE"}},
		{"bad constraint", func(s *shoalv1.ServiceSpec) {
			s.Task.Placement = &shoalv1.Placement{Constraints: []string{"node.role==manager", "node.rol=x"}}
		}, []string{"spec.task.placement.constraints[1]"}},
		{"negative memory", func(s *shoalv1.ServiceSpec) {
			s.Task.Resources = &shoalv1.ResourceRequirements{Reservations: &shoalv1.Resources{MemoryBytes: -5}}
		}, []string{"spec.task.resources.reservations.memory_bytes: must be >= 0"}},
		{"tiny memory limit", func(s *shoalv1.ServiceSpec) {
			s.Task.Resources = &shoalv1.ResourceRequirements{Limits: &shoalv1.Resources{MemoryBytes: 1000}}
		}, []string{"spec.task.resources.limits.memory_bytes: must be at least 6MiB"}},
		{"reservation over limit", func(s *shoalv1.ServiceSpec) {
			s.Task.Resources = &shoalv1.ResourceRequirements{Reservations: &shoalv1.Resources{MemoryBytes: 64 << 20}, Limits: &shoalv1.Resources{MemoryBytes: 32 << 20}}
		}, []string{"reservations.memory_bytes: reservation"}},
		{"relative workdir", func(s *shoalv1.ServiceSpec) { s.Task.Container.Workdir = "tmp" }, []string{"spec.task.container.workdir"}},
		{"bad mount", func(s *shoalv1.ServiceSpec) {
			s.Task.Container.Mounts = []*shoalv1.Mount{{Type: "nfs", Target: "x"}}
		}, []string{"mounts[0].type", "mounts[0].target"}},
		{"bad signal", func(s *shoalv1.ServiceSpec) { s.Task.Container.StopSignal = "SIGNOPE" }, []string{"stop_signal: unknown signal"}},
		{"bad capability", func(s *shoalv1.ServiceSpec) {
			s.Task.Container.CapAdd = []string{"NET_ADMIN", "CAP_FLY"}
			s.Task.Container.CapDrop = []string{"all", "nope"}
		}, []string{`cap_add[1]: unknown capability "CAP_FLY"`, `cap_drop[1]: unknown capability "nope"`}},
		{"good capabilities", func(s *shoalv1.ServiceSpec) {
			s.Task.Container.CapAdd = []string{"cap_net_admin", "SYS_TIME"}
			s.Task.Container.CapDrop = []string{"ALL"}
		}, nil},
		{"good signal", func(s *shoalv1.ServiceSpec) { s.Task.Container.StopSignal = "sigint" }, nil},
		{"bad update order", func(s *shoalv1.ServiceSpec) { s.Update = &shoalv1.UpdateConfig{Order: "sideways"} }, []string{"spec.update.order"}},
		{"bad endpoint port", func(s *shoalv1.ServiceSpec) {
			s.Endpoint = &shoalv1.EndpointSpec{Ports: []*shoalv1.PortConfig{{TargetPort: 0}}}
		}, []string{"spec.endpoint.ports[0].target_port"}},
		{"long constraint is said once", func(s *shoalv1.ServiceSpec) {
			s.Task.Placement = &shoalv1.Placement{Constraints: []string{strings.Repeat("x", 300)}}
		}, []string{"spec.task.placement.constraints[0]: 300 bytes long"}},
		{"env control character", func(s *shoalv1.ServiceSpec) { s.Task.Container.Env = []string{"A\x01B=1"} }, []string{"spec.task.container.env[0]", "control"}},
		{"mount over /proc", func(s *shoalv1.ServiceSpec) {
			s.Task.Container.Mounts = []*shoalv1.Mount{{Type: "tmpfs", Target: "/proc/x"}}
		}, []string{"spec.task.container.mounts[0].target", "/proc"}},
		{"image parsed by go-containerregistry", func(s *shoalv1.ServiceSpec) { s.Task.Container.Image = "Demo:latest" }, []string{"spec.task.container.image", "not a valid image reference"}},
		{"PWR is a signal the agent knows", func(s *shoalv1.ServiceSpec) { s.Task.Container.StopSignal = "SIGPWR" }, nil},
		{"networks are accepted", func(s *shoalv1.ServiceSpec) { s.Task.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: "front"}} }, nil},
		{"the defaults fillDefaults fills in are valid", func(s *shoalv1.ServiceSpec) { fillDefaults(s) }, nil},
		{"several problems at once", func(s *shoalv1.ServiceSpec) { s.Name = ""; s.Replicas = -2 }, []string{"spec.name: required", "spec.replicas"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validSpec()
			tt.mutate(s)
			err := validateServiceSpec(s)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want error containing %q, got nil", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestValidateNodeSpec(t *testing.T) {
	ok := &shoalv1.NodeSpec{DesiredRole: shoalv1.NodeRole_NODE_ROLE_WORKER}
	if err := validateNodeSpec(ok); err != nil {
		t.Fatal(err)
	}
	bad := &shoalv1.NodeSpec{Availability: 7}
	err := validateNodeSpec(bad)
	if err == nil || !strings.Contains(err.Error(), "spec.desired_role") || !strings.Contains(err.Error(), "spec.availability") {
		t.Fatalf("got %v", err)
	}
}

func TestEnumIsAndLabels(t *testing.T) {
	if !enumIs("NODE_STATE_READY", "ready") || !enumIs("TASK_STATE_RUNNING", "running") || enumIs("NODE_STATE_READY", "down") {
		t.Fatal("enumIs")
	}
	if !enumIs("TASK_STATE_RUNNING", "TASK_STATE_RUNNING") {
		t.Fatal("full enum name")
	}
	l := map[string]string{"zone": "a"}
	if !labelMatches(l, "zone") || !labelMatches(l, "zone=a") || labelMatches(l, "zone=b") || labelMatches(l, "x") {
		t.Fatal("labelMatches")
	}
	if err := checkFilters(map[string]string{"nmae": "x"}, "name"); err == nil || !strings.Contains(err.Error(), `unknown key "nmae"`) {
		t.Fatalf("checkFilters: %v", err)
	}
}

// TestUpdateVersionZero: an update that names no version is refused (it
// would skip the optimistic concurrency check); ignore_version asks for
// exactly that; a stale version is still a conflict.
func TestUpdateVersionZero(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	addNode(t, st, "n1", shoalv1.NodeRole_NODE_ROLE_WORKER, shoalv1.NodeState_NODE_STATE_READY)
	created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: validSpec()})
	if err != nil {
		t.Fatal(err)
	}
	svc := created.GetService()
	spec := proto.Clone(svc.GetSpec()).(*shoalv1.ServiceSpec)
	spec.Replicas = 5

	_, err = s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: svc.GetMeta().GetId(), Spec: spec})
	wantCode(t, err, codes.InvalidArgument, "version: required")
	n, _ := raftstore.Get[*shoalv1.Node](st.View(), "n1")
	nspec := proto.Clone(n.GetSpec()).(*shoalv1.NodeSpec)
	nspec.Availability = shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN
	_, err = s.UpdateNode(ctx, &shoalv1.UpdateNodeRequest{NodeId: "n1", Spec: nspec})
	wantCode(t, err, codes.InvalidArgument, "ignore_version")
	if got, _ := raftstore.Get[*shoalv1.Service](st.View(), svc.GetMeta().GetId()); got.GetSpec().GetReplicas() != 3 {
		t.Fatalf("a refused update changed replicas to %d", got.GetSpec().GetReplicas())
	}

	// With the version read: applied. Then the old version is stale.
	upd, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: svc.GetMeta().GetId(), Version: svc.GetMeta().GetVersion(), Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	spec.Replicas = 7
	_, err = s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: svc.GetMeta().GetId(), Version: svc.GetMeta().GetVersion(), Spec: spec})
	wantCode(t, err, codes.Aborted, "")
	if upd.GetService().GetMeta().GetVersion() == svc.GetMeta().GetVersion() {
		t.Fatal("the update did not change the version")
	}

	// Explicitly ignoring the version overwrites.
	if _, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: svc.GetMeta().GetId(), IgnoreVersion: true, Spec: spec}); err != nil {
		t.Fatalf("ignore_version: %v", err)
	}
	if got, _ := raftstore.Get[*shoalv1.Service](st.View(), svc.GetMeta().GetId()); got.GetSpec().GetReplicas() != 7 {
		t.Fatalf("replicas = %d after an update with ignore_version, want 7", got.GetSpec().GetReplicas())
	}
	if _, err := s.UpdateNode(ctx, &shoalv1.UpdateNodeRequest{NodeId: "n1", IgnoreVersion: true, Spec: nspec}); err != nil {
		t.Fatalf("UpdateNode with ignore_version: %v", err)
	}
	if _, err := s.UpdateNode(ctx, &shoalv1.UpdateNodeRequest{NodeId: "n1", Version: n.GetMeta().GetVersion(), Spec: nspec}); status.Code(errdefs.ToGRPC(err)) != codes.Aborted {
		t.Fatalf("UpdateNode with a stale version: %v, want Aborted", err)
	}
}
