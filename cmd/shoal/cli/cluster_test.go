package cli

import (
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestGossipRotatedMessage: the rotation message names when the older
// keys go (the grace period of the cluster's settings), not "the next
// rotation" as it once wrongly said.
func TestGossipRotatedMessage(t *testing.T) {
	for _, tt := range []struct {
		set  *shoalv1.ClusterSettings
		want string
	}{
		{&shoalv1.ClusterSettings{}, "in 10s"},
		{&shoalv1.ClusterSettings{HeartbeatPeriodMs: 2000, NodeDownAfterMissed: 5}, "in 20s"},
	} {
		got := gossipRotatedMessage(tt.set)
		if !strings.Contains(got, tt.want) || strings.Contains(got, "next rotation") {
			t.Errorf("%v: %q, want it to say %q", tt.set, got, tt.want)
		}
	}
}
