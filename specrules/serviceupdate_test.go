package specrules

import (
	"slices"
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// ServiceUpdate with the task not accepted is Service; with it accepted it
// is Service less the task's own problems: every other problem, cross
// rules that read the task included, keeps its field path, reason and
// order.
func TestServiceUpdateSkipsOnlyTheTask(t *testing.T) {
	valid := func() *shoalv1.ServiceSpec {
		return &shoalv1.ServiceSpec{Name: "web", Replicas: 1, Labels: map[string]string{"a": "1"},
			Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:latest", Command: []string{"/bin/true"}, Env: []string{"A=1"}}}}
	}
	tests := []struct {
		name   string
		mutate func(*shoalv1.ServiceSpec)
		fields []string // every problem's field path, in order, from Service
	}{
		{"valid", func(*shoalv1.ServiceSpec) {}, nil},
		{"label key and value", func(s *shoalv1.ServiceSpec) {
			s.Labels = map[string]string{"-k": "1", "b": "x\x00", "c": "ok"}
		}, []string{`spec.labels["-k"]`, `spec.labels["b"]`}},
		{"argv and env entries", func(s *shoalv1.ServiceSpec) {
			s.Task.Container.Command = []string{"/bin/sh", "a\x00"}
			s.Task.Container.Args = []string{"x\x00"}
			s.Task.Container.Env = []string{"A=1", "noequals", "B=" + RedactedEnvValue}
		}, []string{"spec.task.container.command[1]", "spec.task.container.args[0]", "spec.task.container.env[1]", "spec.task.container.env[2]"}},
		{"service and task and after the task", func(s *shoalv1.ServiceSpec) {
			s.Name = ""
			s.Task.Container.Image = "Demo:latest"
			s.Update = &shoalv1.UpdateConfig{Parallelism: -1}
		}, []string{"spec.name", "spec.task.container.image", "spec.update.parallelism"}},
		{"ports need a network (a service rule reading the task)", func(s *shoalv1.ServiceSpec) {
			s.Endpoint = &shoalv1.EndpointSpec{Ports: []*shoalv1.PortConfig{{TargetPort: 80, PublishedPort: 8080, Protocol: "tcp"}}}
		}, []string{"spec.endpoint.ports"}},
		{"no task", func(s *shoalv1.ServiceSpec) { s.Task = nil }, []string{"spec.task.container.image"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := valid()
			tt.mutate(spec)
			full := Service(spec)
			var got []string
			for _, p := range full {
				got = append(got, p.Field)
			}
			if !slices.Equal(got, tt.fields) {
				t.Fatalf("Service fields %q, want %q (%v)", got, tt.fields, full)
			}
			if notAccepted := ServiceUpdate(spec, false); !slices.Equal(notAccepted, full) {
				t.Errorf("ServiceUpdate(spec, false) = %v, want Service's %v", notAccepted, full)
			}
			var want Problems
			for _, p := range full {
				if !strings.HasPrefix(p.Field, "spec.task.") {
					want = append(want, p)
				}
			}
			if accepted := ServiceUpdate(spec, true); !slices.Equal(accepted, want) {
				t.Errorf("ServiceUpdate(spec, true) = %v, want %v", accepted, want)
			}
		})
	}
}
