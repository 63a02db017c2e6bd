package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestBadInput: tasks that cannot run — an image the registry does not
// have, a registry nobody answers at, a command the image does not hold,
// an impossible memory limit, an image with a device node, an image with a
// gzip bomb layer — each end REJECTED or FAILED with an error saying why,
// shown by `service ps`; the bomb leaves nothing in the node's image
// store. A corrupt archive given to `image load` is refused with a clear
// error and loads nothing. Meanwhile a healthy service on the same nodes
// keeps RUNNING the same tasks with the same processes, and the nodes stay
// READY.
func TestBadInput(t *testing.T) {
	regAddr := fmt.Sprintf("%s%d:%d", harness.SubnetPrefix, 11, harness.RegistryPort)
	// The worker's layer cap is low, so that a bomb of a few hundred KB
	// (not 16 GiB of inflation) is enough to hit it; the demo image's
	// layer is far below it.
	c := newClusterWith(t, 1, 1, []string{"--insecure-registry", regAddr, "--max-layer-bytes", "256m"})
	h1, w := c.hosts[0], c.workers[0]
	reg := h1.StartRegistry(t)
	cl := h1.Local()
	deviceRef, _ := pushHostileImage(t, reg, h1.Dir, "device:1", tarWith(t, &tar.Header{Name: "dev/sda", Typeflag: tar.TypeBlock, Devmajor: 8, Devminor: 0, Mode: 0o660}, 0))
	bombRef, bombDiffID := pushHostileImage(t, reg, h1.Dir, "bomb:1", tarWith(t, &tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644}, 512<<20))

	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "steady", 2, []string{"--replicas-max-per-node", "1"})
		cancel()
		if err != nil {
			t.Fatalf("service create steady: %v", err)
		}
	}
	steady := harness.WaitRunning(t, cl, "steady", 2, runTimeout)
	if err := c.checkContainers(steady); err != nil {
		t.Fatal(err)
	}

	// Nothing listens on this port of h1: connections are refused.
	deadRegistry := h1.IP + ":5999"
	onWorker := []string{"--constraint", "node.role==worker"} // the node with the low layer cap
	cases := []struct {
		name     string
		flags    []string
		image    string
		reason   *regexp.Regexp // what the task's error must say
		rejected bool           // must be REJECTED, not FAILED
	}{
		{"device", onWorker, deviceRef, regexp.MustCompile(`block device 8:0`), true},
		{"bomb", onWorker, bombRef, regexp.MustCompile(`more than \d+ bytes .*--max-layer-bytes`), true},
		{"unknown", nil, reg.Addr + "/nosuch:1", regexp.MustCompile(`(?i)not found|unknown|manifest`), false},
		{"unreachable", []string{"--no-resolve-image"}, deadRegistry + "/demo:1", regexp.MustCompile(`(?i)refused|unreachable|` + regexp.QuoteMeta(deadRegistry)), false},
		{"nocommand", []string{"--no-resolve-image", "--entrypoint", "/no/such/program"}, testImage, regexp.MustCompile(`/no/such/program`), false},
		// More than the node has (1k is refused by the API already: below).
		{"hugemem", []string{"--no-resolve-image", "--limit-memory", "64t"}, testImage, regexp.MustCompile(`(?i)memory`), false},
	}
	for _, tc := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), attemptLimit)
		// Not restarted: the one task's end is what is checked.
		args := slices.Concat([]string{"service", "create", "--name", tc.name, "--replicas", "1", "--detach",
			"--restart-condition", "none"}, tc.flags, []string{tc.image})
		_, err := cl.Run(ctx, args...)
		cancel()
		if err != nil {
			t.Fatalf("service create %s: %v", tc.name, err)
		}
	}
	for _, tc := range cases {
		var bad *shoalv1.Task
		harness.WaitTasks(t, cl, tc.name, settleTimeout, func(tasks []*shoalv1.Task) error {
			if len(tasks) != 1 {
				return fmt.Errorf("%d tasks, want 1", len(tasks))
			}
			tk := tasks[0]
			st := tk.GetStatus()
			switch st.GetState() {
			case shoalv1.TaskState_TASK_STATE_REJECTED, shoalv1.TaskState_TASK_STATE_FAILED:
			default:
				if st.GetState() >= shoalv1.TaskState_TASK_STATE_RUNNING {
					return harness.Permanent(fmt.Errorf("task %s is %s, want REJECTED or FAILED", tk.GetMeta().GetId(), st.GetState()))
				}
				return fmt.Errorf("task %s is %s, want REJECTED or FAILED", tk.GetMeta().GetId(), st.GetState())
			}
			if tc.rejected && st.GetState() != shoalv1.TaskState_TASK_STATE_REJECTED {
				return harness.Permanent(fmt.Errorf("task %s is %s (%q), want REJECTED", tk.GetMeta().GetId(), st.GetState(), st.GetErr()))
			}
			if !tc.reason.MatchString(st.GetErr()) {
				return harness.Permanent(fmt.Errorf("task %s is %s with error %q (message %q): it does not say why (want %q)",
					tk.GetMeta().GetId(), st.GetState(), st.GetErr(), st.GetMessage(), tc.reason))
			}
			bad = tk
			return nil
		})
		// `service ps` shows the state and the error.
		ctx, cancel := attempt()
		out, err := cl.Run(ctx, "service", "ps", tc.name)
		cancel()
		if err != nil {
			t.Fatalf("service ps %s: %v", tc.name, err)
		}
		state := strings.ToLower(strings.TrimPrefix(bad.GetStatus().GetState().String(), "TASK_STATE_"))
		if !strings.Contains(strings.ToLower(out), state) || !strings.Contains(out, bad.GetStatus().GetErr()) {
			t.Errorf("service ps %s does not show %s and the error %q:\n%s", tc.name, state, bad.GetStatus().GetErr(), out)
		}
		t.Logf("%s: %s: %s", tc.name, state, bad.GetStatus().GetErr())
	}

	// The bomb left nothing in the worker's image store: no layer of it,
	// nothing half-unpacked.
	images := filepath.Join(w.DataDir, "images")
	if _, err := os.Stat(filepath.Join(images, "layers", strings.TrimPrefix(bombDiffID, "sha256:"))); err == nil {
		t.Errorf("the bomb's layer %s is in %s's image store", bombDiffID, w)
	}
	if ents, err := os.ReadDir(filepath.Join(images, "tmp")); err != nil || len(ents) != 0 {
		t.Errorf("%s's image store tmp/ holds %v (%v), want nothing", w, ents, err)
	}

	// A memory limit no container can live with is refused up front,
	// naming the field.
	{
		ctx, cancel := attempt()
		_, err := cl.Run(ctx, "service", "create", "--name", "tinymem", "--replicas", "1", "--detach", "--no-resolve-image",
			"--limit-memory", "1k", testImage)
		cancel()
		if err == nil || !regexp.MustCompile(`(?i)memory`).MatchString(err.Error()) {
			t.Errorf("service create --limit-memory 1k: %v; want refused with a message about the memory limit", err)
		}
	}

	// A corrupt archive: refused, with a clear error, and nothing loaded.
	imagesOf := func() []string {
		t.Helper()
		ctx, cancel := attempt()
		defer cancel()
		imgs, err := harness.List[shoalv1.ImageSummary](ctx, cl, "image", "ls", "--node", w.Name)
		if err != nil {
			t.Fatalf("image ls --node %s: %v", w.Name, err)
		}
		var ds []string
		for _, img := range imgs {
			ds = append(ds, img.GetDigest()+" "+strings.Join(img.GetRefs(), ","))
		}
		slices.Sort(ds)
		return ds
	}
	before := imagesOf()
	good, err := os.ReadFile(harness.DemoImage(t))
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(h1.Dir, "truncated.oci.tar")
	garbage := filepath.Join(h1.Dir, "garbage.tar")
	if err := os.WriteFile(truncated, good[:len(good)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(garbage, []byte(strings.Repeat("this is not an image archive\n", 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	clear := regexp.MustCompile(`(?i)archive|corrupt|truncated|unexpected EOF|tar`)
	for _, f := range []string{truncated, garbage} {
		ctx, cancel := attempt()
		_, err := cl.Run(ctx, "image", "load", "--node", w.Name, f)
		cancel()
		if err == nil {
			t.Errorf("image load of %s succeeded", filepath.Base(f))
			continue
		}
		if !clear.MatchString(err.Error()) {
			t.Errorf("image load of %s: the error does not say what is wrong: %v", filepath.Base(f), err)
		}
		t.Logf("image load %s: %v", filepath.Base(f), err)
	}
	if after := imagesOf(); !slices.Equal(after, before) {
		t.Errorf("images of %s changed by the failed loads: %v, before %v", w, after, before)
	}

	// The healthy service was not disturbed: same tasks, same processes,
	// still answering; the nodes are READY.
	now := harness.WaitRunning(t, cl, "steady", 2, settleTimeout)
	if got, want := taskIDs(now), taskIDs(steady); !slices.Equal(got, want) {
		t.Errorf("steady's tasks are now %v, were %v", got, want)
	}
	if got, want := pids(now), pids(steady); !mapsEqual(got, want) {
		t.Errorf("steady's pids are now %v, were %v", got, want)
	}
	if err := c.checkContainers(now); err != nil {
		t.Error(err)
	}
	for _, tk := range now {
		ctx, cancel := attempt()
		_, err := getWhoami(ctx, c.hostOf(tk.GetNodeId()), harness.TaskIP(tk))
		cancel()
		if err != nil {
			t.Errorf("steady task %s: %v", tk.GetMeta().GetId(), err)
		}
	}
	c.waitNodes(h1, func(nodes []*shoalv1.Node) error {
		if err := c.nodeReady(nodes, h1, shoalv1.NodeRole_NODE_ROLE_MANAGER); err != nil {
			return err
		}
		return c.nodeReady(nodes, w, shoalv1.NodeRole_NODE_ROLE_WORKER)
	})
}

// tarWith is a gzipped tar of one entry, hdr, with size bytes of zeros as
// its content: a few hundred KB that inflate to size.
func tarWith(t *testing.T, hdr *tar.Header, size int64) []byte {
	t.Helper()
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	hdr.Size, hdr.Format = size, tar.FormatPAX
	if err := tw.WriteHeader(hdr); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(tw, zeroReader{}, size); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return gz.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// pushHostileImage pushes the demo image with one more layer, blob (a
// gzipped tar), as reg/repoTag, and returns the reference pinned to the
// pushed digest and the hostile layer's diff id.
func pushHostileImage(t *testing.T, reg *harness.Registry, dir, repoTag string, blob []byte) (ref, diffID string) {
	t.Helper()
	base := filepath.Join(dir, "base.layout")
	if _, err := os.Stat(base); err != nil {
		harness.BuildImage(t, harness.ImageSpec{Name: "demo:1", Format: "oci-layout"}, base)
	}
	idx, err := layout.ImageIndexFromPath(base)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(blob)), nil })
	if err != nil {
		t.Fatal(err)
	}
	d, err := l.DiffID()
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, l); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, strings.ReplaceAll(repoTag, ":", "-")+".layout")
	p, err := layout.Write(out, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	ref, digest := reg.Push(t, out, repoTag)
	return ref + "@" + digest, d.String()
}
