package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// DemoImageName is the reference of the image DemoImage holds, which Init,
// Join and Daemon load into every node (--load-image).
const DemoImageName = "demo:latest"

// tools are the demo program, the image packer and the demo image, built
// once per test binary run into a temp dir that Main removes.
var tools struct {
	once      sync.Once
	dir       string
	demo      string // static shoal-demo binary
	mkimage   string // shoal-mkimage binary
	demoImage string // demo:latest as an OCI archive
	err       error
}

func buildTools() error {
	tools.once.Do(func() {
		tools.err = func() error {
			root, err := ModuleRoot()
			if err != nil {
				return err
			}
			if tools.dir, err = os.MkdirTemp("", "shoal-e2e-tools-"); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
			defer cancel()
			start := time.Now()
			tools.demo = filepath.Join(tools.dir, "shoal-demo")
			tools.mkimage = filepath.Join(tools.dir, "shoal-mkimage")
			for _, b := range []struct {
				out, pkg string
				env      []string
			}{
				// Static: it is PID 1 of a container with nothing else in it.
				{tools.demo, "./cmd/shoal-demo", []string{"CGO_ENABLED=0"}},
				{tools.mkimage, "./cmd/shoal-mkimage", nil},
			} {
				cmd := exec.CommandContext(ctx, "go", "build", "-o", b.out, b.pkg)
				cmd.Dir = root
				cmd.Env = append(os.Environ(), b.env...)
				if out, err := cmd.CombinedOutput(); err != nil {
					return fmt.Errorf("go build %s: %w\n%s", b.pkg, err, out)
				}
			}
			tools.demoImage = filepath.Join(tools.dir, "demo.oci.tar")
			if _, err := mkimage(ctx, ImageSpec{Name: DemoImageName}, tools.demoImage); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "harness: built the demo image %s in %v\n", tools.demoImage, time.Since(start).Round(time.Millisecond))
			return nil
		}()
	})
	return tools.err
}

// DemoImage returns the path of an OCI archive holding demo:latest (the
// static ./cmd/shoal-demo packaged by ./cmd/shoal-mkimage: entrypoint
// /shoal-demo, command serve), built once per test binary run.
func DemoImage(t testing.TB) string {
	t.Helper()
	if err := buildTools(); err != nil {
		t.Fatalf("demo image: %v", err)
	}
	return tools.demoImage
}

// ImageSpec describes an image made of the demo program with
// ./cmd/shoal-mkimage (see there).
type ImageSpec struct {
	// Name is the image's reference (default demo:latest).
	Name string
	// Format is oci-archive (default), oci-layout (a directory: what
	// Registry.Push takes) or docker.
	Format string
	// Entrypoint replaces /shoal-demo; NoEntrypoint leaves it empty.
	Entrypoint   string
	NoEntrypoint bool
	// Cmd is the image's command (default serve).
	Cmd []string
	// Env adds K=V variables; a different Env gives a different digest.
	Env []string
	// Healthcheck is the image's HEALTHCHECK (shoal-mkimage --healthcheck:
	// a JSON array for the exec form) with its interval and retries.
	Healthcheck    string
	HealthInterval time.Duration
	HealthRetries  int
}

func mkimage(ctx context.Context, s ImageSpec, out string) (string, error) {
	args := []string{"--binary", tools.demo, "--out", out}
	if s.Name != "" {
		args = append(args, "--name", s.Name)
	}
	if s.Format != "" {
		args = append(args, "--format", s.Format)
	}
	switch {
	case s.NoEntrypoint:
		args = append(args, "--entrypoint", "")
	case s.Entrypoint != "":
		args = append(args, "--entrypoint", s.Entrypoint)
	}
	for _, c := range s.Cmd {
		args = append(args, "--cmd", c)
	}
	for _, e := range s.Env {
		args = append(args, "--env", e)
	}
	if s.Healthcheck != "" {
		args = append(args, "--healthcheck", s.Healthcheck, "--health-interval", s.HealthInterval.String(),
			"--health-retries", fmt.Sprint(s.HealthRetries))
	}
	cmd := exec.CommandContext(ctx, tools.mkimage, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("shoal-mkimage %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(b)), nil
}

// BuildImage writes the image s describes to out (a file, or a directory
// for oci-layout) and returns its manifest digest (sha256:...).
func BuildImage(t testing.TB, s ImageSpec, out string) string {
	t.Helper()
	if err := buildTools(); err != nil {
		t.Fatalf("image tools: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := mkimage(ctx, s, out)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
