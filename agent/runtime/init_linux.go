package runtime

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// InitPath is where a container that asks for an init (Spec.Init) finds
// it. /dev is the runtime's own tmpfs, so the bind mount changes nothing
// in the image's rootfs, and no user mount may go there (specrules).
const InitPath = "/dev/init"

// InitBinaryName is the init's file name beside the shoal binary or in
// PATH (built from cmd/shoal-init).
const InitBinaryName = "shoal-init"

// WithInitBinary sets the host path of the static init program
// (cmd/shoal-init) that containers with Spec.Init run as PID 1. Without
// it the runtime looks for InitBinaryName beside its own executable, then
// in PATH, when a container first needs it.
func WithInitBinary(path string) Option {
	return func(r *Libcontainer) error {
		if !filepath.IsAbs(path) {
			return fmt.Errorf("%w: init binary %q must be an absolute path", ErrInvalidArgument, path)
		}
		r.initBinary = path
		return nil
	}
}

// findInitBinary returns the init binary's host path.
func (r *Libcontainer) findInitBinary() (string, error) {
	cands := []string{r.initBinary}
	if r.initBinary == "" {
		cands = nil
		if exe, err := os.Executable(); err == nil {
			if exe, err := filepath.EvalSymlinks(exe); err == nil {
				cands = append(cands, filepath.Join(filepath.Dir(exe), InitBinaryName))
			}
		}
		if p, err := exec.LookPath(InitBinaryName); err == nil {
			if p, err := filepath.Abs(p); err == nil {
				cands = append(cands, p)
			}
		}
	}
	for _, p := range cands {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	if r.initBinary != "" {
		return "", fmt.Errorf("the task asks for an init, but the init binary %s is missing or not executable", r.initBinary)
	}
	return "", fmt.Errorf("the task asks for an init, but %s is neither beside the shoal binary nor in PATH "+
		"(make build builds it: CGO_ENABLED=0 go build -o bin/%[1]s ./cmd/%[1]s)", InitBinaryName)
}

// CheckInit says whether containers that ask for an init can have one
// on this node.
func (r *Libcontainer) CheckInit() error {
	_, err := r.findInitBinary()
	return err
}

// processArgs is what the container runs: the spec's args, under the
// init when it asks for one.
func processArgs(s *Spec) []string {
	if !s.Init {
		return s.Args
	}
	return append([]string{InitPath, "--"}, s.Args...)
}

// initMount bind-mounts the init binary read-only at InitPath.
func initMount(binary string) specs.Mount {
	return specs.Mount{Destination: InitPath, Type: "bind", Source: binary,
		Options: []string{"rbind", "rprivate", "ro", "nosuid", "nodev"}}
}
