package network

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
)

// The bridge's owner. Several nodes on one machine (the README's quick
// start) each need a bridge of their own: a node started on another
// node's bridge took that node's task veths for leftovers of its own
// crash and deleted them (sweep), cutting the other node's tasks off
// without a word. So a node writes its state dir into its bridge's alias
// ("shoal-node <dir>"), and refuses a bridge whose alias names another
// node's state dir that still exists while the bridge carries task ports
// that are not its own; otherwise (its own bridge, an unmarked one, a
// gone node's) it adopts the bridge and marks it.
//
// A state dir is compared as a directory, not as a string: --data-dir is
// taken as typed, and a node restarted with its dir spelled another way (a
// symlink, a relative path) must not take its own crash leftovers for
// another node's ports and refuse to start. The alias holds the dir's
// absolute, symlink-free path.

const ownerPrefix = "shoal-node "

// ownerAlias is the alias a node with state dir dir gives its bridge
// (IFALIASZ bounds it: a longer dir is cut, which only weakens the check).
func ownerAlias(dir string) string {
	a := ownerPrefix + dir
	if len(a) > 255 {
		a = a[:255]
	}
	return a
}

// canonicalDir is dir absolute and without symlinks, as far as it can be
// resolved (dir itself otherwise).
func canonicalDir(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	return dir
}

// sameDir reports whether a and b name one existing directory.
func sameDir(a, b string) bool {
	ia, err := os.Stat(a)
	if err != nil {
		return false
	}
	ib, err := os.Stat(b)
	return err == nil && os.SameFile(ia, ib)
}

// claimBridge checks the bridge (index idx) against its owner and marks
// it as this node's. ours names the veths of this node's tasks.
func claimBridge(h *netlink.Handle, idx int, stateDir string, ours map[string]bool) error {
	link, err := h.LinkByIndex(idx)
	if err != nil {
		return fmt.Errorf("look up the bridge: %w", err)
	}
	want := ownerAlias(canonicalDir(stateDir))
	alias := link.Attrs().Alias
	if alias == want {
		return nil
	}
	if other, ok := strings.CutPrefix(alias, ownerPrefix); ok && !sameDir(other, stateDir) {
		if _, err := os.Stat(other); err == nil {
			if port, err := foreignPort(h, idx, ours); err != nil {
				return err
			} else if port != "" {
				return fmt.Errorf("%w: bridge %q is the task bridge of another shoal node on this machine (state in %s; its task port %s is attached): give each node on one machine a bridge and subnet of its own (--bridge NAME --bridge-subnet CIDR)",
					ErrFailedPrecondition, link.Attrs().Name, other, port)
			}
		}
	}
	if err := h.LinkSetAlias(link, want); err != nil {
		return fmt.Errorf("mark bridge %q as this node's: %w", link.Attrs().Name, err)
	}
	return nil
}

// foreignPort returns a task veth on the bridge that is not one of ours
// ("" if none).
func foreignPort(h *netlink.Handle, idx int, ours map[string]bool) (string, error) {
	var links []netlink.Link
	var err error
	for i := 0; i < 10; i++ {
		if links, err = h.LinkList(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return "", fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		a := l.Attrs()
		if l.Type() == "veth" && a.MasterIndex == idx && isVethName(a.Name) && !ours[a.Name] {
			return a.Name, nil
		}
	}
	return "", nil
}
