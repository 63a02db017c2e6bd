package harness

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// Main is the body of a TestMain for a package of multi-host tests:
//
//	func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
//
// Before the tests it sweeps what crashed earlier runs left behind (see
// Sweep); after them it removes the shoal binary it built. It does not skip
// anything when not root: the tests themselves then fail (RequireRoot).
func Main(m *testing.M) int {
	if os.Geteuid() == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		removed, err := Sweep(ctx)
		cancel()
		if len(removed) > 0 {
			fmt.Fprintf(os.Stderr, "harness: removed %d namespaces left by an earlier run: %v\n", len(removed), removed)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "harness: sweeping leftovers: %v\n", err)
		}
	}
	code := m.Run()
	removeBuild()
	return code
}
