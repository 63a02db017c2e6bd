package dns

import (
	"reflect"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestServes(t *testing.T) {
	running, starting := shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_STARTING
	for _, c := range []struct {
		state  shoalv1.TaskState
		health shoalv1.TaskHealth
		want   bool
	}{
		{running, shoalv1.TaskHealth_TASK_HEALTH_NONE, true},
		{running, shoalv1.TaskHealth_TASK_HEALTH_HEALTHY, true},
		{running, shoalv1.TaskHealth_TASK_HEALTH_STARTING, false},
		{running, shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY, false},
		{starting, shoalv1.TaskHealth_TASK_HEALTH_NONE, false},
		{shoalv1.TaskState_TASK_STATE_SHUTDOWN, shoalv1.TaskHealth_TASK_HEALTH_HEALTHY, false},
	} {
		if got := Serves(&shoalv1.Endpoint{State: c.state, Health: c.health}); got != c.want {
			t.Errorf("%s/%s: %v, want %v", c.state, c.health, got, c.want)
		}
	}
}

// Names answer only healthy tasks where a check exists; a service whose
// every task is unhealthy is known and answers nothing.
func TestViewSkipsUnhealthy(t *testing.T) {
	withHealth := func(e *shoalv1.Endpoint, h shoalv1.TaskHealth) *shoalv1.Endpoint { e.Health = h; return e }
	v := NewView()
	v.Update([]*shoalv1.NetworkState{netState("n1", []*shoalv1.ServiceVIPState{
		{ServiceName: "api", EndpointMode: "dnsrr"},
		{ServiceName: "sick", EndpointMode: "dnsrr"},
	},
		withHealth(ep("api", "10.1.0.50/24"), shoalv1.TaskHealth_TASK_HEALTH_HEALTHY),
		withHealth(ep("api", "10.1.0.51/24", "bad"), shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY),
		withHealth(ep("api", "10.1.0.52/24"), shoalv1.TaskHealth_TASK_HEALTH_STARTING),
		ep("api", "10.1.0.53/24"), // no check
		withHealth(ep("sick", "10.1.0.60/24"), shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY),
	)})
	for _, c := range []struct {
		name   string
		want   []string
		exists bool
	}{
		{"api", []string{"10.1.0.50", "10.1.0.53"}, true},
		{"tasks.api", []string{"10.1.0.50", "10.1.0.53"}, true},
		{"sick", nil, true},
		{"bad", nil, false},
	} {
		got, ok := v.Lookup([]string{"n1"}, c.name)
		if ok != c.exists || !reflect.DeepEqual(strs(got), c.want) {
			t.Errorf("Lookup(%q) = %v, %v; want %v, %v", c.name, strs(got), ok, c.want, c.exists)
		}
	}
}
