package cli

import (
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestNodeStatus(t *testing.T) {
	deadline := timestamppb.Now()
	tests := []struct {
		st   *shoalv1.NodeStatus
		want string
	}{
		{&shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_READY}, "Ready"},
		{&shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_DOWN}, "Down"},
		{&shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_DISCONNECTED}, "Disconnected"},
		{&shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_DISCONNECTED, RestartDeadline: deadline}, "Restarting"},
	}
	for _, tt := range tests {
		if got := nodeStatus(&shoalv1.Node{Status: tt.st}); got != tt.want {
			t.Errorf("nodeStatus(%v) = %q, want %q", tt.st, got, tt.want)
		}
	}
}
