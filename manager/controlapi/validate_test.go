package controlapi

import (
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
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
		}, []string{"spec.task.resources.limits.memory_bytes: must be at least 4MiB"}},
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
