package cli

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/shoal-dev/shoal/agent/agentapi"
	"github.com/shoal-dev/shoal/agent/image"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// startTestAgent serves a real agent API with a real image store for node
// id; it stops at cleanup.
func (c *cliCluster) startTestAgent(id string) string {
	c.t.Helper()
	store, err := image.Open(filepath.Join(c.t.TempDir(), "images"), nil)
	if err != nil {
		c.t.Fatal(err)
	}
	srv := agentapi.New(agentapi.Config{NodeID: id, Images: store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agentapi.ServeListener(ctx, ln, c.nodeCerts(id, trust.RoleWorker), srv) }()
	c.t.Cleanup(func() {
		cancel()
		<-done
	})
	return ln.Addr().String()
}

func testArchive(t *testing.T, ref string) string {
	t.Helper()
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "img.tar")
	if err := tarball.WriteToFile(p, tag, img); err != nil {
		t.Fatal(err)
	}
	return p
}

// archiveDigest is the manifest digest of the one image in a tarball.
func archiveDigest(t *testing.T, p string) string {
	t.Helper()
	img, err := tarball.ImageFromPath(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// archiveID is the id (config digest) of the one image in a tarball, as
// hex.
func archiveID(t *testing.T, p string) string {
	t.Helper()
	img, err := tarball.ImageFromPath(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return id.Hex
}

func TestImageCommands(t *testing.T) {
	c := newCLICluster(t)
	addr := c.startTestAgent("n1")
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	c.mgr.nodes = []*shoalv1.Node{
		{Meta: &shoalv1.Meta{Id: "n1"}, Spec: &shoalv1.NodeSpec{Name: "node1"}, Status: &shoalv1.NodeStatus{AgentAddr: addr}},
		{Meta: &shoalv1.Meta{Id: "n2"}, Spec: &shoalv1.NodeSpec{Name: "old"}, Status: &shoalv1.NodeStatus{}},
		{Meta: &shoalv1.Meta{Id: "n3"}, Spec: &shoalv1.NodeSpec{Name: "gone"}, Status: &shoalv1.NodeStatus{AgentAddr: closedAddr}},
	}
	archive := testArchive(t, "demo/app:1")
	digest := archiveDigest(t, archive)
	id := archiveID(t, archive)
	svc := func(name, image string) *shoalv1.Service {
		return &shoalv1.Service{Meta: &shoalv1.Meta{Id: "svc" + name}, Spec: &shoalv1.ServiceSpec{Name: name,
			Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: image}}}}
	}
	c.mgr.services = []*shoalv1.Service{svc("web", "demo/app:1"), svc("api", "docker.io/demo/app:1@"+digest), svc("other", "demo/app:2")}
	corrupt := filepath.Join(t.TempDir(), "corrupt.tar")
	os.WriteFile(corrupt, bytes.Repeat([]byte("not a tar "), 1000), 0o600)

	steps := []struct {
		args            []string
		ok              bool
		stdout, stderr  string // substrings
		notInStdoutText string
	}{
		{args: []string{"image", "load", "--node", "node1", archive}, ok: true, stdout: "Loaded image: demo/app:1\n"},
		{args: []string{"image", "ls", "--node", "node1"}, ok: true, stdout: "REFERENCE"},
		{args: []string{"image", "ls", "--node", "n1"}, ok: true, stdout: "demo/app:1 "},
		{args: []string{"image", "ls", "--node", "n1", "--format", "json"}, ok: true, stdout: `"index.docker.io/demo/app:1"`},
		{args: []string{"image", "ls", "--node", "n1", "-q"}, ok: true, stdout: "sha256:", notInStdoutText: "REFERENCE"},
		{args: []string{"image", "ls", "--node", "n1", "--format", "yaml"}, stderr: "--format"},
		{args: []string{"image", "load", "--node", "node1", corrupt}, stderr: "bad image archive"},
		{args: []string{"image", "load", "--node", "node1", t.TempDir()}, stderr: "is a directory"},
		{args: []string{"image", "load", "--node", "node1", "/nonexistent.tar"}, stderr: "no such file"},
		// Services "web" and "api" use it (by tag, and pinned by digest
		// while its only reference is that tag): refused, naming both.
		{args: []string{"image", "rm", "--node", "node1", "demo/app:1"}, stderr: "image demo/app:1 is used by service api, web"},
		{args: []string{"image", "rm", "--node", "node1", "demo/app:1", "other:1"}, stderr: "used by service api, web"},
		// By a prefix of its id, which the agent takes for the image
		// (dropping all its references) but the image list does not show.
		{args: []string{"image", "rm", "--node", "node1", id[:12]}, stderr: "may be the id of an image that service api, web uses"},
		{args: []string{"image", "ls", "--node", "n1"}, ok: true, stdout: "demo/app:1 "},
		{args: []string{"image", "rm", "--node", "node1", "--force", "demo/app:1"}, ok: true, stdout: "Untagged: demo/app:1\n"},
		{args: []string{"image", "rm", "--node", "node1", "demo/app:1"}, stderr: `"demo/app:1"`},
		{args: []string{"image", "ls", "--node", "nosuch"}, stderr: `node "nosuch": not found`},
		{args: []string{"image", "ls", "--node", "old"}, stderr: `node "old" has not reported an agent API address`},
		{args: []string{"image", "ls", "--node", "gone"}, stderr: `node "gone" (agent API at ` + closedAddr + `): unavailable`},
		{args: []string{"image", "ls"}, stderr: "--node: required unless --data-dir holds a node"},
	}
	for _, s := range steps {
		code, out, errOut := c.run(s.args...)
		if (code == 0) != s.ok || !strings.Contains(out, s.stdout) || !strings.Contains(errOut, s.stderr) ||
			s.notInStdoutText != "" && strings.Contains(out, s.notInStdoutText) {
			t.Errorf("shoal %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(s.args, " "), code, out, errOut)
		}
	}
}

// TestImageLocalNode: without --node the node of --data-dir is used.
func TestImageLocalNode(t *testing.T) {
	c := newCLICluster(t)
	addr := c.startTestAgent("n1")
	dataDir := t.TempDir()
	// As datadir.Node.Save writes it.
	if err := os.WriteFile(filepath.Join(dataDir, "node.json"), []byte(`{"node_id": "n1", "role": "worker", "agent_addr": "`+addr+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var o, e bytes.Buffer
	code := Main(context.Background(), []string{"--cert-dir", c.certDir, "--data-dir", dataDir, "--timeout", "10s", "image", "ls"}, &o, &e)
	if code != 0 || !strings.Contains(o.String(), "REFERENCE") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, o.String(), e.String())
	}
}

func TestImageFormatting(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string
	}{
		{"index.docker.io/library/app:1", "app:1"},
		{"index.docker.io/me/app:1", "me/app:1"},
		{"reg:5000/app@sha256:abc", "reg:5000/app@sha256:abc"},
	} {
		if got := displayRef(c.in); got != c.want {
			t.Errorf("displayRef(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	for _, c := range []struct {
		n    int64
		want string
	}{{0, "0B"}, {999, "999B"}, {1000, "1kB"}, {1234567, "1.23MB"}, {45600000000, "45.6GB"}} {
		if got := humanSize(c.n); got != c.want {
			t.Errorf("humanSize(%d) = %q, want %q", c.n, got, c.want)
		}
	}
	imgs := []*shoalv1.ImageSummary{{Digest: "sha256:0123456789abcdef", Refs: []string{"index.docker.io/library/a:1", "b:2"}, Size: 2500000},
		{Digest: "sha256:fedcba9876543210", Size: 10}}
	var b bytes.Buffer
	if err := printImages(&b, imgs, listFlags{format: "table"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	want := "REFERENCE   DIGEST         CREATED   SIZE    LAST USED\n" +
		"a:1         0123456789ab             2.5MB   \n" +
		"b:2         0123456789ab             2.5MB   \n" +
		"<none>      fedcba987654             10B     \n"
	if b.String() != want {
		t.Errorf("table:\n%q\nwant:\n%q", b.String(), want)
	}
}

// TestImageLocalNodeOldState: a node.json without an agent address names
// the node; its address comes from the managers.
func TestImageLocalNodeOldState(t *testing.T) {
	c := newCLICluster(t)
	addr := c.startTestAgent("n1")
	c.mgr.nodes = []*shoalv1.Node{{Meta: &shoalv1.Meta{Id: "n1"}, Spec: &shoalv1.NodeSpec{Name: "node1"}, Status: &shoalv1.NodeStatus{AgentAddr: addr}}}
	dataDir := t.TempDir()
	os.WriteFile(filepath.Join(dataDir, "node.json"), []byte(`{"node_id": "n1"}`), 0o600)
	code, out, errOut := c.run("--data-dir", dataDir, "image", "ls")
	if code != 0 || !strings.Contains(out, "REFERENCE") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	os.WriteFile(filepath.Join(dataDir, "node.json"), []byte(`{"role": "worker"}`), 0o600)
	code, _, errOut = c.run("--data-dir", dataDir, "image", "ls")
	if code == 0 || !strings.Contains(errOut, "names no node") {
		t.Fatalf("exit %d, stderr: %s", code, errOut)
	}
}

// TestImageUsers: which services lose their image when a reference is
// removed, compared by fully qualified name, tag and digest.
func TestImageUsers(t *testing.T) {
	const d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	const d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	imgs := []*shoalv1.ImageSummary{
		{Digest: d1, Refs: []string{"index.docker.io/library/app:1", "index.docker.io/library/app:latest"}},
		{Digest: d2, Refs: []string{"reg:5000/tool:2"}},
	}
	svc := func(name, image string) *shoalv1.Service {
		return &shoalv1.Service{Spec: &shoalv1.ServiceSpec{Name: name, Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: image}}}}
	}
	svcs := []*shoalv1.Service{
		svc("bytag", "app:1"),
		svc("latest", "app"),
		svc("qualified", "docker.io/library/app:1"),
		svc("pinned", "app:1@"+d1),
		svc("tool", "reg:5000/tool:2"),
		svc("toolpinned", "reg:5000/tool@"+d2),
		svc("elsewhere", "reg:5000/app:1"),
	}
	for _, tc := range []struct {
		ref  string
		want []string
	}{
		{"app:1", []string{"bytag", "qualified"}},            // pinned still found by digest (app:latest stays)
		{"docker.io/library/app:latest", []string{"latest"}}, // same name, written out
		{"app:2", nil}, // not in the store: the agent says so
		{"sha256:1111", []string{"bytag", "latest", "pinned", "qualified"}}, // all references go
		{"1111111111111111", []string{"bytag", "latest", "pinned", "qualified"}},
		{"reg:5000/tool:2", []string{"tool", "toolpinned"}}, // its last reference: dangling, collected
		{"app@" + d1, nil}, // not one of its names: nothing changes
	} {
		if got, maybeID := imageUsers(tc.ref, imgs, svcs); !slices.Equal(got, tc.want) || maybeID {
			t.Errorf("imageUsers(%q) = %q, %v; want %q, false", tc.ref, got, maybeID, tc.want)
		}
	}
	// A prefix of an image id (config digest), which the agent takes for
	// the image but ListImages does not show: it may be any image, so
	// every image's users count (it was let through, and the agent
	// dropped all of the image's references).
	all := []string{"bytag", "latest", "pinned", "qualified", "tool", "toolpinned"}
	for _, ref := range []string{"3333", "sha256:3333abcd", strings.Repeat("4", 64)} {
		if got, maybeID := imageUsers(ref, imgs, svcs); !slices.Equal(got, all) || !maybeID {
			t.Errorf("imageUsers(%q) = %q, %v; want %q, true", ref, got, maybeID, all)
		}
	}
	// A digest-like name of no image, on a node whose images no service
	// uses: nothing to refuse.
	if got, _ := imageUsers("3333", imgs, []*shoalv1.Service{svc("elsewhere", "reg:5000/app:1")}); len(got) != 0 {
		t.Errorf("imageUsers(3333) with no users = %q", got)
	}
}
