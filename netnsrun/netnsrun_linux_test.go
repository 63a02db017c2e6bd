package netnsrun

import (
	"errors"
	"testing"

	"github.com/vishvananda/netns"
)

// TestRun: fn runs in another namespace (a fresh one for a closed
// handle), its error comes back, and the caller's thread never moves.
func TestRun(t *testing.T) {
	before, err := netns.Get()
	if err != nil {
		t.Skip("no network namespaces here:", err)
	}
	defer before.Close()
	var inside netns.NsHandle
	boom := errors.New("boom")
	err = Run(netns.None(), func() error {
		var err error
		inside, err = netns.Get()
		if err != nil {
			return err
		}
		return boom
	})
	if errors.Is(err, errFromUnshare) {
		t.Skip("cannot unshare a network namespace (not root)")
	}
	if !errors.Is(err, boom) {
		t.Fatalf("Run returned %v, want fn's error", err)
	}
	defer inside.Close()
	if inside.Equal(before) {
		t.Fatal("fn ran in the caller's namespace")
	}
	if err := RunPath("", func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("RunPath(\"\") = %v", err)
	}
	after, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !after.Equal(before) {
		t.Fatal("the caller's thread changed namespace")
	}
}
