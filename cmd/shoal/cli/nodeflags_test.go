package cli

import (
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/daemon"
)

// TestNodeFlags: the node flags reach the daemon's options.
func TestNodeFlags(t *testing.T) {
	var o daemon.Options
	c := &cobra.Command{Use: "x"}
	bindAgent(c, &o)
	if err := c.Flags().Parse([]string{"--gossip-port", "7950", "--max-layer-bytes", "1g", "--max-layer-entries", "5", "--bridge", "br9"}); err != nil {
		t.Fatal(err)
	}
	if o.GossipPort != 7950 || o.MaxLayerBytes != 1<<30 || o.MaxLayerEntries != 5 || o.Bridge != "br9" {
		t.Fatalf("options: gossip %d, layer bytes %d, entries %d, bridge %q", o.GossipPort, o.MaxLayerBytes, o.MaxLayerEntries, o.Bridge)
	}
}

// TestSettingShown: an unset (0) cluster setting is shown as the default
// it stands for, not as 0.
func TestSettingShown(t *testing.T) {
	if got := settingDuration(0, time.Minute); got != "1m0s (default)" {
		t.Errorf("unset duration: %q", got)
	}
	if got := settingDuration(1500, time.Minute); got != "1.5s" {
		t.Errorf("set duration: %q", got)
	}
	if got := settingInt(0, 100000); got != "100000 (default)" {
		t.Errorf("unset count: %q", got)
	}
	if got := settingInt(7, 100000); got != "7" {
		t.Errorf("set count: %q", got)
	}
}

func TestProgressLine(t *testing.T) {
	if got := progressLine("web", 2, 5, false); got != "web: 2/5 tasks running" {
		t.Errorf("scaling up: %q", got)
	}
	if got := progressLine("web", 2, 0, false); got != "web: 2 tasks running, 0 wanted (stopping 2)" {
		t.Errorf("scaling down: %q", got)
	}
	// A rollout of 5 running tasks starts with none of the new spec: not
	// an outage, and the line must not read as one.
	if got := progressLine("web", 0, 5, true); got != "web: 0/5 tasks of the new spec running" {
		t.Errorf("rollout: %q", got)
	}
}
