package harness

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// RegistryProgram is the registry server (Debian's docker-registry
// package: the CNCF distribution registry).
const RegistryProgram = "/usr/bin/docker-registry"

// RegistryPort is the port StartRegistry listens on.
const RegistryPort = 5000

// registryStartTimeout bounds the wait for the registry to answer /v2/.
const registryStartTimeout = 30 * time.Second

// Registry is a container registry server running on a host, over plain
// http (nodes pull from it with --insecure-registry Addr).
type Registry struct {
	Host *Host
	// Addr is IP:5000 on the host's fabric address.
	Addr string
	Proc *Proc
	// Dir holds its configuration and storage.
	Dir string
}

// StartRegistry runs a registry on h (storage under the host's directory,
// listening on h.IP:5000) and waits until it answers.
func (h *Host) StartRegistry(t testing.TB) *Registry {
	t.Helper()
	if _, err := os.Stat(RegistryProgram); err != nil {
		t.Fatalf("the registry tests need %s (Debian package docker-registry; scripts/setup.sh installs it): %v", RegistryProgram, err)
	}
	r := &Registry{Host: h, Addr: fmt.Sprintf("%s:%d", h.IP, RegistryPort), Dir: filepath.Join(h.Dir, "registry")}
	if err := os.MkdirAll(filepath.Join(r.Dir, "storage"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
`, filepath.Join(r.Dir, "storage"), r.Addr)
	cfgPath := filepath.Join(r.Dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	r.Proc = h.StartProgram(t, RegistryProgram, "serve", cfgPath)
	cl := h.HTTPClient(2 * time.Second)
	Eventually(t, registryStartTimeout, 100*time.Millisecond, func() error {
		if err := r.Proc.CheckRunning(); err != nil {
			return err
		}
		resp, err := cl.Get("http://" + r.Addr + "/v2/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		return nil
	})
	return r
}

// Push uploads the one image of the OCI layout directory layoutDir (see
// ImageSpec's oci-layout format) as Addr/repoTag ("demo:1") and returns the
// reference pushed (Addr/demo:1) and its manifest digest. The upload runs
// in the test process, its connections made inside the registry host's
// namespace.
func (r *Registry) Push(t testing.TB, layoutDir, repoTag string) (ref, digest string) {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(layoutDir)
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("push: %s holds %d images, want 1", layoutDir, len(im.Manifests))
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	ref = r.Addr + "/" + repoTag
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := remote.Write(tag, img, remote.WithContext(ctx), remote.WithTransport(r.Host.Transport())); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return ref, d.String()
}
