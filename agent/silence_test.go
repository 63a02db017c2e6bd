package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestSilenceLimitCoversDownThreshold: the agent gives up on a silent
// manager no sooner than the manager's default down threshold (4 periods;
// 3 periods dropped every session of a leader stalled for 1.5 s).
func TestSilenceLimitCoversDownThreshold(t *testing.T) {
	const managerDownAfterMissed = 4 // dispatcher.DefaultDownAfterMissed
	for _, period := range []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second} {
		if got, min := silenceLimit(period), managerDownAfterMissed*period; got < min {
			t.Errorf("period %s: silence limit %s, want at least %s", period, got, min)
		}
	}
}

// TestHeartbeatSaysHowLongTheManagerWasSilent: with no acknowledgement
// the heartbeat loop ends with the silence limit in its error.
func TestHeartbeatSaysHowLongTheManagerWasSilent(t *testing.T) {
	a := &Agent{}
	period := 5 * time.Millisecond
	err := a.heartbeat(context.Background(), func(*shoalv1.AgentMessage) error { return nil }, period, make(chan struct{}))
	if err == nil || !strings.Contains(err.Error(), silenceLimit(period).String()) {
		t.Fatalf("heartbeat: %v, want manager silent for %s", err, silenceLimit(period))
	}
}
