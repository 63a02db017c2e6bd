package runtime

import (
	"fmt"
	"os"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/sys/user"
)

// resolveUser turns spec.User into uid, gid, supplementary groups and a
// home directory, reading the rootfs' /etc/passwd and /etc/group (resolved
// inside the rootfs so that a symlink cannot point at the host's files).
func resolveUser(rootfs, spec string) (*user.ExecUser, error) {
	def := &user.ExecUser{Uid: 0, Gid: 0, Home: "/"}
	if spec == "" {
		spec = "0:0"
	}
	passwd, err := securejoin.SecureJoin(rootfs, "/etc/passwd")
	if err != nil {
		return nil, err
	}
	group, err := securejoin.SecureJoin(rootfs, "/etc/group")
	if err != nil {
		return nil, err
	}
	pr, err := os.Open(passwd)
	if err != nil {
		pr = nil
	} else {
		defer pr.Close()
	}
	gr, err := os.Open(group)
	if err != nil {
		gr = nil
	} else {
		defer gr.Close()
	}
	// GetExecUser wants nil io.Readers, not typed nil *os.File.
	var u *user.ExecUser
	switch {
	case pr != nil && gr != nil:
		u, err = user.GetExecUser(spec, def, pr, gr)
	case pr != nil:
		u, err = user.GetExecUser(spec, def, pr, nil)
	case gr != nil:
		u, err = user.GetExecUser(spec, def, nil, gr)
	default:
		u, err = user.GetExecUser(spec, def, nil, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: user %q: %v", ErrInvalidArgument, spec, err)
	}
	return u, nil
}
