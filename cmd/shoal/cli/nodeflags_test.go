package cli

import (
	"testing"

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
