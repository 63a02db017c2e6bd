package cli

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestShortImage(t *testing.T) {
	for in, want := range map[string]string{
		"demo:latest":                "demo:latest",
		"reg:5000/app:1@sha256:abcd": "reg:5000/app:1",
		"reg:5000/app@sha256:abcd":   "reg:5000/app@sha256:abcd", // no tag to show
		"app@sha256:abcd":            "app@sha256:abcd",
	} {
		if got := shortImage(in); got != want {
			t.Errorf("shortImage(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPinImageUnreachableRegistryWarns(t *testing.T) {
	// A port nothing listens on: the lookup fails at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var out, errOut bytes.Buffer
	a := &app{out: &out, errOut: &errOut}
	ref := addr + "/app:1"
	if got := a.pinImage(context.Background(), ref); got != ref {
		t.Errorf("pinImage = %q, want the reference unchanged", got)
	}
	if !strings.Contains(errOut.String(), "could not be pinned") {
		t.Errorf("no warning: %q", errOut.String())
	}
	errOut.Reset()
	pinned := ref + "@sha256:0123456789012345678901234567890123456789012345678901234567890123"
	if got := a.pinImage(context.Background(), pinned); got != pinned || errOut.Len() != 0 {
		t.Errorf("pinned ref changed to %q (warning %q)", got, errOut.String())
	}
}

func TestParseMount(t *testing.T) {
	m, err := parseMount("type=bind,source=/srv/data,target=/data,readonly")
	if err != nil || m.GetType() != "bind" || m.GetSource() != "/srv/data" || m.GetTarget() != "/data" || !m.GetReadOnly() {
		t.Errorf("bind: %v %v", m, err)
	}
	m, err = parseMount("type=tmpfs,dst=/tmp")
	if err != nil || m.GetType() != "tmpfs" || m.GetTarget() != "/tmp" || m.GetReadOnly() {
		t.Errorf("tmpfs: %v %v", m, err)
	}
	for _, bad := range []string{"type=bind,source=/x", "type=bind,size=1,target=/x"} {
		if _, err := parseMount(bad); err == nil {
			t.Errorf("parseMount(%q): no error", bad)
		}
	}
}

func TestConvergence(t *testing.T) {
	mk := func(id string, state, desired shoalv1.TaskState, ver uint64) *shoalv1.Task {
		return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, DesiredState: desired, SpecVersion: ver,
			Status: &shoalv1.TaskStatus{State: state}}
	}
	run, want := shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_RUNNING
	repl := &shoalv1.Service{SpecVersion: 2, Spec: &shoalv1.ServiceSpec{Replicas: 2}}
	global := &shoalv1.Service{SpecVersion: 1, Spec: &shoalv1.ServiceSpec{Mode: shoalv1.ServiceMode_SERVICE_MODE_GLOBAL}}
	tests := []struct {
		name  string
		svc   *shoalv1.Service
		tasks []*shoalv1.Task
		done  bool
	}{
		{"replicated, both running", repl, []*shoalv1.Task{mk("a", run, want, 2), mk("b", run, want, 2)}, true},
		{"replicated, one assigned", repl, []*shoalv1.Task{mk("a", run, want, 2), mk("b", shoalv1.TaskState_TASK_STATE_ASSIGNED, want, 2)}, false},
		{"replicated, old spec", repl, []*shoalv1.Task{mk("a", run, want, 2), mk("b", run, want, 1)}, false},
		{"replicated, one still stopping", repl, []*shoalv1.Task{mk("a", run, want, 2), mk("b", run, want, 2),
			mk("c", run, shoalv1.TaskState_TASK_STATE_SHUTDOWN, 1)}, false},
		{"global, no task yet", global, nil, false},
		{"global, all running", global, []*shoalv1.Task{mk("a", run, want, 1), mk("b", run, want, 1)}, true},
	}
	for _, tt := range tests {
		m := map[string]*shoalv1.Task{}
		for _, x := range tt.tasks {
			m[x.GetMeta().GetId()] = x
		}
		if _, _, done := convergence(tt.svc, m); done != tt.done {
			t.Errorf("%s: done = %v, want %v", tt.name, done, tt.done)
		}
	}
}
