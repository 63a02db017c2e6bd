package overlay

import (
	"net/netip"
	"slices"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestWithdrawnRoundTrip(t *testing.T) {
	w := Withdrawn{VTEP: netip.MustParseAddr("192.0.2.7"), TaskID: "task-1"}
	b, err := w.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !IsWithdrawn(b) {
		t.Fatal("IsWithdrawn: false for an encoded Withdrawn")
	}
	got, err := DecodeWithdrawn(b)
	if err != nil || got != w {
		t.Fatalf("DecodeWithdrawn: %+v, %v; want %+v", got, err, w)
	}
	h, _ := Hint{NetworkID: "n", TaskID: "t", Address: netip.MustParsePrefix("10.0.0.2/24"), MAC: []byte{2, 0, 0, 0, 0, 1},
		VTEP: w.VTEP, State: shoalv1.TaskState_TASK_STATE_RUNNING}.Encode()
	if IsWithdrawn(h) {
		t.Fatal("a hint taken for a Withdrawn")
	}
	for name, bad := range map[string][]byte{
		"empty": nil, "hint": h, "truncated": b[:len(b)-1], "trailing": append(slices.Clone(b), 'x'),
		"no task id": {withdrawnMagic, withdrawnVersion, 192, 0, 2, 7, 0}, "version 2": append([]byte{withdrawnMagic, 2}, b[2:]...),
	} {
		if _, err := DecodeWithdrawn(bad); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	for name, bad := range map[string]Withdrawn{
		"no task": {VTEP: w.VTEP}, "IPv6": {VTEP: netip.MustParseAddr("2001:db8::1"), TaskID: "t"},
		"long id": {VTEP: w.VTEP, TaskID: string(make([]byte, maxHintID+1))},
	} {
		if _, err := bad.Encode(); err == nil {
			t.Errorf("%s: encoded", name)
		}
	}
}

func TestWithdrawnTasksAndEndpointNodes(t *testing.T) {
	mk := func(task, node string, s shoalv1.TaskState) *shoalv1.Endpoint {
		return &shoalv1.Endpoint{TaskId: task, NodeAddr: node, State: s}
	}
	const (
		run  = shoalv1.TaskState_TASK_STATE_RUNNING
		shut = shoalv1.TaskState_TASK_STATE_SHUTDOWN
		done = shoalv1.TaskState_TASK_STATE_COMPLETE
	)
	ov := &shoalv1.NetworkState{Network: &shoalv1.Network{Meta: &shoalv1.Meta{Id: "ov"}, Spec: &shoalv1.NetworkSpec{Driver: "overlay"}},
		Endpoints: []*shoalv1.Endpoint{mk("a", "192.0.2.1", run), mk("b", "192.0.2.2", shut), mk("c", "192.0.2.2", done), mk("b", "192.0.2.2", shut)}}
	br := &shoalv1.NetworkState{Network: &shoalv1.Network{Meta: &shoalv1.Meta{Id: "br"}, Spec: &shoalv1.NetworkSpec{Driver: "bridge"}},
		Endpoints: []*shoalv1.Endpoint{mk("d", "192.0.2.3", shut)}}
	states := []*shoalv1.NetworkState{ov, br}
	if got := WithdrawnTasks(states); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("WithdrawnTasks: %v, want [b c] (not running a, not bridge d)", got)
	}
	want := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")}
	if got := EndpointNodes(states, []string{"ov", "br"}); !slices.Equal(got, want) {
		t.Errorf("EndpointNodes: %v, want %v", got, want)
	}
	if got := EndpointNodes(states, []string{"br"}); len(got) != 0 {
		t.Errorf("EndpointNodes of a bridge network: %v, want none", got)
	}
}
