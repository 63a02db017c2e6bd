package runtime

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// MountOverlay mounts an overlayfs at target: lower[0] is the top-most
// read-only layer. upper and work must be on the same filesystem; they and
// target are created if missing.
func MountOverlay(lower []string, upper, work, target string) error {
	if len(lower) == 0 {
		return fmt.Errorf("%w: overlay needs at least one lower dir", ErrInvalidArgument)
	}
	for _, d := range append(append([]string(nil), lower...), upper, work, target) {
		if strings.ContainsAny(d, ",:") {
			return fmt.Errorf("%w: overlay path %q contains ',' or ':'", ErrInvalidArgument, d)
		}
	}
	for _, d := range []string{upper, work, target} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lower, ":"), upper, work)
	if err := unix.Mount("overlay", target, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay on %s: %w", target, err)
	}
	return nil
}

// Unmount detaches target (lazily if busy). Not mounted is not an error.
func Unmount(target string) error {
	err := unix.Unmount(target, 0)
	if err == unix.EBUSY {
		err = unix.Unmount(target, unix.MNT_DETACH)
	}
	if err == unix.EINVAL || err == unix.ENOENT {
		return nil // not a mount point
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}
