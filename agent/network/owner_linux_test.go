package network

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestSecondNodeRefusesAnotherNodesBridge: two nodes on one machine given
// the same bridge (the quick start without --bridge): the second one used
// to delete the first one's task veths as its own crash leftovers. Now it
// refuses to start while the bridge's owner (another state dir, still
// there) has task ports on it, naming the bridge and what to do, and the
// first node's task keeps its port; the owner itself restarts on it, and
// once the other node's tasks are gone the bridge is adopted.
func TestSecondNodeRefusesAnotherNodesBridge(t *testing.T) {
	host := inFreshNetNS(t)
	dirA, dirB := t.TempDir(), t.TempDir()
	registerUnmountAll(t, dirA)
	registerUnmountAll(t, dirB)
	a, err := New(Config{StateDir: dirA})
	if err != nil {
		t.Fatal(err)
	}
	att := setup(t, a, "t1")

	_, err = New(Config{StateDir: dirB})
	if !errors.Is(err, ErrFailedPrecondition) || !strings.Contains(err.Error(), `bridge "shoal0" is the task bridge of another shoal node`) ||
		!strings.Contains(err.Error(), dirA) || !strings.Contains(err.Error(), "--bridge") {
		t.Fatalf("second node on the first one's bridge: %v, want a refusal naming the bridge, the owner and --bridge", err)
	}
	if _, err := host.LinkByName(att.HostVeth); err != nil {
		t.Fatalf("the first node's task port is gone: %v", err)
	}

	// The owner restarts on its own bridge.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a = newTestManager(t, Config{StateDir: dirA})
	if got := a.List(); len(got) != 1 || got[0] != "t1" {
		t.Fatalf("owner after restart lists %v", got)
	}
	// Its tasks gone, another node may take the bridge over.
	if err := a.Teardown(context.Background(), "t1"); err != nil {
		t.Fatal(err)
	}
	a.Close()
	newTestManager(t, Config{StateDir: dirB})
	br, err := host.LinkByName("shoal0")
	if err != nil || br.Attrs().Alias != ownerAlias(canonicalDir(dirB)) {
		t.Fatalf("bridge after the takeover: alias %q (%v), want %q", br.Attrs().Alias, err, ownerAlias(canonicalDir(dirB)))
	}
}

// TestOwnerRestartsThroughAnotherPathToItsDir: a node whose bridge carries
// a crash leftover (a task port its state does not list) restarts with its
// state dir spelled another way (a symlink, a relative path: --data-dir is
// taken as typed). That dir is its own, not another node's: it adopts the
// bridge and sweeps the leftover. Before, the alias was compared as a
// string, the old spelling still existed (it is the same dir), the
// leftover was taken for another node's port, and the node refused to
// start until an operator removed the port by hand.
func TestOwnerRestartsThroughAnotherPathToItsDir(t *testing.T) {
	host := inFreshNetNS(t)
	dir := t.TempDir()
	registerUnmountAll(t, dir)
	a := newTestManager(t, Config{StateDir: dir})
	setup(t, a, "t1")
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	br, err := host.LinkByName("shoal0")
	if err != nil {
		t.Fatal(err)
	}
	ghost := vethName("ghost") // a task of the crash that the state lost
	if err := host.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ghost, MasterIndex: br.Attrs().Index}, PeerName: "ghost-peer"}); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "node-network")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{StateDir: link})
	if err != nil {
		t.Fatalf("restart through a symlink to its own state dir: %v", err)
	}
	defer m.Close()
	if got := m.List(); len(got) != 1 || got[0] != "t1" {
		t.Fatalf("after the restart: tasks %v, want t1", got)
	}
	if _, err := host.LinkByName(ghost); err == nil {
		t.Errorf("the crash leftover %s is still on the bridge", ghost)
	}
	br, err = host.LinkByName("shoal0")
	if err != nil || br.Attrs().Alias != ownerAlias(canonicalDir(dir)) {
		t.Fatalf("bridge alias %q (%v), want %q", br.Attrs().Alias, err, ownerAlias(canonicalDir(dir)))
	}
}
