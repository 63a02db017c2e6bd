package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

var (
	permissionDenied = regexp.MustCompile(`(?i)permission ?denied`)
	namesWorkerRole  = regexp.MustCompile(`(?i)worker`)
)

// TestWorkerCertRefused: a worker's own certificate, presented as client
// credentials to the control API, is refused with PermissionDenied naming
// the role; the admin credentials work from the same host (control).
func TestWorkerCertRefused(t *testing.T) {
	c := newCluster(t, 1, 1)
	h1, w := c.hosts[0], c.workers[0]

	// Dress the worker's node credentials up as a CLI cert dir.
	dir := filepath.Join(w.Dir, "stolen-certs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{"ca.crt": "ca.crt", "node.crt": "admin.crt", "node.key": "admin.key"} {
		b, err := os.ReadFile(filepath.Join(w.NodeCertDir(), src))
		if err != nil {
			t.Fatalf("worker credentials: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// Control: the admin credentials work from the worker's host.
	ctx, cancel := attempt()
	_, err := w.Remote(c.adminDir, h1.Addr()).Run(ctx, "node", "ls")
	cancel()
	if err != nil {
		t.Fatalf("node ls with the admin credentials from %s: %v", w, err)
	}

	for _, args := range [][]string{{"node", "ls"}, {"service", "ls"}, {"token", "show", "manager"}} {
		ctx, cancel := attempt()
		out, err := w.Remote(dir, h1.Addr()).Run(ctx, args...)
		cancel()
		if err == nil {
			t.Errorf("%v with a worker certificate succeeded:\n%s", args, out)
			continue
		}
		msg := err.Error()
		if !permissionDenied.MatchString(msg) || !namesWorkerRole.MatchString(msg) {
			t.Errorf("%v with a worker certificate: want PermissionDenied naming the worker role, got: %v", args, err)
			continue
		}
		t.Logf("%v refused: %v", args, err)
	}
}
