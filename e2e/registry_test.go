package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// registryEnv marks the image pushed to the registry: it makes its digest
// differ from the demo image every node loads at start (so the agents
// cannot find it locally by digest and must pull it), and the running
// containers show it in their environment.
const registryEnv = "SHOAL_E2E_IMAGE=from-registry"

// TestRegistryPull: a real registry server (Debian's docker-registry) on
// h1, an image pushed to it; `service create --replicas 3` of
// h1:5000/demo:1 on two workers (joined with --insecure-registry) pins the
// image to the registry's digest, both workers pull it, and every task
// RUNS that digest and answers HTTP on its address with the pushed
// image's environment.
func TestRegistryPull(t *testing.T) {
	// h1's address is the fabric's first: the workers must know the
	// registry when they join.
	regAddr := fmt.Sprintf("%s%d:%d", harness.SubnetPrefix, 11, harness.RegistryPort)
	c := newClusterWith(t, 1, 2, []string{"--insecure-registry", regAddr})
	h1 := c.hosts[0]
	if h1.IP+fmt.Sprintf(":%d", harness.RegistryPort) != regAddr {
		t.Fatalf("h1 is %s, the workers were told the registry is %s", h1.IP, regAddr)
	}
	reg := h1.StartRegistry(t)

	layoutDir := filepath.Join(h1.Dir, "demo-1.layout")
	built := harness.BuildImage(t, harness.ImageSpec{Name: "demo:1", Format: "oci-layout", Env: []string{registryEnv}}, layoutDir)
	ref, digest := reg.Push(t, layoutDir, "demo:1")
	if digest != built {
		t.Fatalf("pushed digest %s, built %s", digest, built)
	}
	t.Logf("pushed %s@%s", ref, digest)

	cl := h1.Local()
	{
		ctx, cancel := context.WithTimeout(context.Background(), 2*runTimeout)
		out, err := cl.Run(ctx, "service", "create", "--name", "pulled", "--replicas", "3",
			"--constraint", "node.role==worker", ref)
		cancel()
		if err != nil {
			t.Fatalf("service create: %v", err)
		}
		if !strings.Contains(out, "3/3 tasks running") {
			t.Errorf("service create printed no \"3/3 tasks running\":\n%s", out)
		}
	}

	// The CLI pinned the tag to the digest the registry serves.
	{
		ctx, cancel := attempt()
		var svc shoalv1.Service
		err := cl.JSON(ctx, &svc, "service", "inspect", "pulled")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := svc.GetSpec().GetTask().GetContainer().GetImage(), ref+"@"+digest; got != want {
			t.Errorf("service image %q, want it pinned: %q", got, want)
		}
	}

	tasks := harness.WaitRunning(t, cl, "pulled", 3, runTimeout)
	if err := c.checkContainers(tasks); err != nil {
		t.Fatal(err)
	}
	workers := map[*harness.Host]int{}
	for _, tk := range tasks {
		h := c.hostOf(tk.GetNodeId())
		workers[h]++
		if got := tk.GetStatus().GetImageDigest(); got != digest {
			t.Errorf("task %s runs image %s, want the pushed %s", tk.GetMeta().GetId(), got, digest)
		}
		ctx, cancel := attempt()
		w, err := getWhoami(ctx, h, harness.TaskIP(tk))
		cancel()
		if err != nil {
			t.Errorf("task %s on %s: %v", tk.GetMeta().GetId(), h, err)
			continue
		}
		if !slices.Contains(w.Env, registryEnv) {
			t.Errorf("task %s: the container's environment %v lacks %s: not the pushed image", tk.GetMeta().GetId(), w.Env, registryEnv)
		}
	}
	if len(workers) != 2 || workers[h1] != 0 {
		t.Errorf("tasks per host %v, want them on both workers only", workers)
	}

	// Each worker pulled it from the registry (the registry's access log
	// names them), and now holds it.
	for _, w := range c.workers {
		if !strings.Contains(reg.Proc.Output(), w.IP) {
			t.Errorf("the registry's log shows no request from %s", w)
		}
		ctx, cancel := attempt()
		imgs, err := harness.List[shoalv1.ImageSummary](ctx, cl, "image", "ls", "--node", w.Name)
		cancel()
		if err != nil {
			t.Fatalf("image ls --node %s: %v", w.Name, err)
		}
		found := false
		for _, img := range imgs {
			if img.GetDigest() == digest {
				found = true
			}
		}
		if !found {
			t.Errorf("image ls --node %s does not list %s: %v", w.Name, digest, imgs)
		}
	}
	t.Logf("3 tasks RUNNING %s pulled from the registry by both workers", digest)
}
