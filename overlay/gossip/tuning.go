package gossip

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultTuning is what Shoal runs with. It starts from memberlist's LAN
// defaults (ProbeInterval 1s, ProbeTimeout 500ms, SuspicionMult 4,
// SuspicionMaxMult 6, IndirectChecks 3, GossipInterval 200ms, PushPull 30s)
// and is set from the measurements in bench_test.go (see README of the
// package's benchmark notes in the report).
var DefaultTuning = Tuning{
	ProbeInterval:    time.Second,
	ProbeTimeout:     500 * time.Millisecond,
	GossipInterval:   200 * time.Millisecond,
	SuspicionMult:    4,
	SuspicionMaxMult: 6,
	IndirectChecks:   3,
	PushPullInterval: 30 * time.Second,
	TCPTimeout:       10 * time.Second,
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
