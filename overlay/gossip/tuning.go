package gossip

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultTuning is what Shoal runs with: memberlist's LAN defaults with
// probing and suspicion about twice as fast. Measured (bench_test.go, 50
// members on loopback, 2 cores; see the package figures in README):
//   - LAN defaults (ProbeInterval 1s, ProbeTimeout 500ms, SuspicionMult 4,
//     SuspicionMaxTimeoutMult 6): a real death seen by everyone in ~9 s —
//     slower than the dispatcher's own heartbeat limit (2 s) and than the
//     3x limit it grants an "alive" node (6 s), so gossip could only delay
//     a DOWN, never speed it up;
//   - this tuning: ~3.5-3.8 s to every observer, i.e. a dead node is DOWN
//     in ~4 s instead of 6 s. A member stalled 2 s (SIGSTOP) is never
//     declared dead; one stalled 5 s is (every observer) — but a node
//     stalled that long has also missed its heartbeats, so gossip adds no
//     false DOWN the heartbeats would not already cause.
//
// GossipInterval 100ms spreads hints and state faster at a small cost
// (a packet per member every 100ms on a LAN).
var DefaultTuning = Tuning{
	ProbeInterval:    500 * time.Millisecond,
	ProbeTimeout:     250 * time.Millisecond,
	GossipInterval:   100 * time.Millisecond,
	SuspicionMult:    3,
	SuspicionMaxMult: 4,
	IndirectChecks:   3,
	PushPullInterval: 30 * time.Second,
	TCPTimeout:       5 * time.Second,
	AwarenessMaxMult: 8,
}

func (t Tuning) apply(c *memberlist.Config) {
	d := DefaultTuning
	pick := func(v, def time.Duration) time.Duration {
		if v != 0 {
			return v
		}
		return def
	}
	pickI := func(v, def int) int {
		if v != 0 {
			return v
		}
		return def
	}
	c.ProbeInterval = pick(t.ProbeInterval, d.ProbeInterval)
	c.ProbeTimeout = pick(t.ProbeTimeout, d.ProbeTimeout)
	c.GossipInterval = pick(t.GossipInterval, d.GossipInterval)
	c.SuspicionMult = pickI(t.SuspicionMult, d.SuspicionMult)
	c.SuspicionMaxTimeoutMult = pickI(t.SuspicionMaxMult, d.SuspicionMaxMult)
	c.IndirectChecks = pickI(t.IndirectChecks, d.IndirectChecks)
	c.PushPullInterval = pick(t.PushPullInterval, d.PushPullInterval)
	c.TCPTimeout = pick(t.TCPTimeout, d.TCPTimeout)
	c.AwarenessMaxMultiplier = pickI(t.AwarenessMaxMult, d.AwarenessMaxMult)
}
