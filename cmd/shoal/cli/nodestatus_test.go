package cli

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestNodeStatus(t *testing.T) {
	now := time.Now()
	deadline := timestamppb.New(now)
	tests := []struct {
		st   *shoalv1.NodeStatus
		want string
	}{
		{&shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_READY}, "Ready"},
		{&shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_DOWN}, "Down"},
		{&shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_DISCONNECTED}, "Disconnected"},
		{&shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_DISCONNECTED, RestartDeadline: deadline}, "Restarting"},
		// Admitted a second ago, its agent not connected yet.
		{&shoalv1.NodeStatus{LastHeartbeat: timestamppb.New(now.Add(-time.Second))}, "Starting"},
		// Admitted long ago and never connected (its process failed).
		{&shoalv1.NodeStatus{LastHeartbeat: timestamppb.New(now.Add(-startingWindow))}, "Unknown"},
		{&shoalv1.NodeStatus{}, "Unknown"},
		{&shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_READY, LastHeartbeat: timestamppb.New(now)}, "Ready"},
	}
	for _, tt := range tests {
		if got := nodeStatusAt(&shoalv1.Node{Status: tt.st}, now); got != tt.want {
			t.Errorf("nodeStatusAt(%v) = %q, want %q", tt.st, got, tt.want)
		}
	}
}
