package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestHealthChecks: on a manager and a worker, service web (the demo
// image, HTTP check on /health) becomes healthy: `service ps` shows it,
// `task inspect` carries the last probe's output, and its name answers
// its tasks; service execd (an exec check run inside its container)
// becomes healthy too. Service sick (HTTP check on a path that answers 404) never
// does: its tasks are stopped and reported FAILED "unhealthy: GET /nope:
// 404 Not Found", the restart policy replaces them, and while they run
// neither tasks.sick nor the VIP behind the name sick sends anyone to
// them. An image's own HEALTHCHECK fails its tasks the same way unless
// the service says --no-healthcheck.
func TestHealthChecks(t *testing.T) {
	c := newCluster(t, 1, 1)
	cl := c.hosts[0].Local()
	run(t, cl, "network", "create", "app")
	netID := inspectNetwork(t, cl, "app").GetMeta().GetId()
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "web", 2, []string{"--network", "app", "--health-http", "8080/health",
			"--health-interval", "300ms", "--health-timeout", "2s"})
		if err == nil {
			// An exec check in the exec form (the demo image has no shell).
			err = createServiceFlags(ctx, cl, "execd", 1, []string{"--health-cmd", `["/shoal-demo","fetch","http://127.0.0.1:8080/health"]`,
				"--health-interval", "300ms"})
		}
		if err == nil {
			err = createServiceFlags(ctx, cl, "sick", 1, []string{"--network", "app", "--health-http", "8080/nope",
				"--health-interval", "200ms", "--health-retries", "2", "--restart-delay", "500ms"})
		}
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}

	// web: RUNNING and healthy, shown so.
	web := harness.WaitTasks(t, cl, "web", settleTimeout, func(all []*shoalv1.Task) error {
		lv := live(all)
		if len(lv) != 2 {
			return fmt.Errorf("%d live tasks, want 2", len(lv))
		}
		for _, tk := range lv {
			if st := tk.GetStatus(); st.GetState() != shoalv1.TaskState_TASK_STATE_RUNNING || st.GetHealth() != shoalv1.TaskHealth_TASK_HEALTH_HEALTHY {
				return fmt.Errorf("task %s is %s/%s, want RUNNING/HEALTHY", tk.GetMeta().GetId(), st.GetState(), st.GetHealth())
			}
		}
		return nil
	})
	for _, tk := range web {
		if out := tk.GetStatus().GetHealthOutput(); !strings.Contains(out, "GET /health: 200 OK") {
			t.Errorf("task %s: health output %q", tk.GetMeta().GetId(), out)
		}
	}
	if out := run(t, cl, "service", "ps", "web"); len(regexp.MustCompile(`(?m)Running .*\bhealthy\b`).FindAllString(out, -1)) != 2 {
		t.Errorf("service ps web does not show two healthy running tasks:\n%s", out)
	}
	if out := run(t, cl, "task", "inspect", web[0].GetMeta().GetId()); !strings.Contains(out, "GET /health: 200 OK") {
		t.Errorf("task inspect does not show the last probe's output:\n%s", out)
	}
	// execd: the probe ran inside the container (its output is the demo
	// server's /health body, fetched from the container's loopback).
	harness.WaitTasks(t, cl, "execd", settleTimeout, func(all []*shoalv1.Task) error {
		lv := live(all)
		if len(lv) != 1 {
			return fmt.Errorf("%d live tasks, want 1", len(lv))
		}
		if st := lv[0].GetStatus(); st.GetHealth() != shoalv1.TaskHealth_TASK_HEALTH_HEALTHY || strings.TrimSpace(st.GetHealthOutput()) != "ok" {
			return fmt.Errorf("task %s is %s/%s output %q, want RUNNING/HEALTHY \"ok\"", lv[0].GetMeta().GetId(), st.GetState(), st.GetHealth(), st.GetHealthOutput())
		}
		return nil
	})
	nsWeb := taskNS(c.hostOf(web[0].GetNodeId()), web[0].GetMeta().GetId())
	var webAddrs []string
	for _, tk := range web {
		webAddrs = append(webAddrs, overlayAddr(tk, netID))
	}
	slices.Sort(webAddrs)
	harness.Eventually(t, settleTimeout, 100*time.Millisecond, func() error {
		ctx, cancel := attempt()
		defer cancel()
		rc, ips, err := nsLookup(ctx, nsWeb, "tasks.web")
		if err != nil || rc != mdns.RcodeSuccess || !slices.Equal(ips, webAddrs) {
			return fmt.Errorf("tasks.web: rcode %d %v %v, want %v", rc, ips, err, webAddrs)
		}
		return nil
	})

	// sick: failed as unhealthy and replaced.
	harness.WaitTasks(t, cl, "sick", settleTimeout, func(all []*shoalv1.Task) error {
		failed := 0
		for _, tk := range all {
			st := tk.GetStatus()
			if st.GetState() == shoalv1.TaskState_TASK_STATE_FAILED && strings.HasPrefix(st.GetErr(), "unhealthy: GET /nope: 404 Not Found") {
				failed++
			}
		}
		if failed < 2 {
			return fmt.Errorf("%d tasks failed unhealthy, want 2 (one replaced, then its replacement)", failed)
		}
		return nil
	})
	if out := run(t, cl, "service", "ps", "sick"); !regexp.MustCompile(`(?m)Failed .*unhealthy: GET /nope: 404 Not Found`).MatchString(out) {
		t.Errorf("service ps sick does not show the unhealthy failure:\n%s", out)
	}

	// The image's own HEALTHCHECK is honoured (checked:1 fetches a path
	// that answers 404 from inside the container), and --no-healthcheck
	// turns it off.
	img := filepath.Join(c.hosts[0].Dir, "checked.oci.tar")
	harness.BuildImage(t, harness.ImageSpec{Name: "checked:1", Healthcheck: `["/shoal-demo","fetch","http://127.0.0.1:8080/nope"]`,
		HealthInterval: 200 * time.Millisecond, HealthRetries: 2}, img)
	for _, h := range c.hosts {
		run(t, cl, "image", "load", "--node", h.Name, img)
	}
	run(t, cl, "service", "create", "--name", "imgsick", "--detach", "--no-resolve-image", "--restart-delay", "500ms", "checked:1")
	run(t, cl, "service", "create", "--name", "imgoff", "--detach", "--no-resolve-image", "--no-healthcheck", "checked:1")
	harness.WaitTasks(t, cl, "imgsick", settleTimeout, func(all []*shoalv1.Task) error {
		failed := 0
		for _, tk := range all {
			if st := tk.GetStatus(); st.GetState() == shoalv1.TaskState_TASK_STATE_FAILED && strings.HasPrefix(st.GetErr(), "unhealthy: ") {
				failed++
			}
		}
		if failed < 2 {
			return fmt.Errorf("%d tasks failed unhealthy, want 2", failed)
		}
		return nil
	})
	// imgoff runs without a health: a checked task is RUNNING/starting
	// from its first RUNNING report on.
	if off := harness.WaitRunning(t, cl, "imgoff", 1, settleTimeout); off[0].GetStatus().GetHealth() != shoalv1.TaskHealth_TASK_HEALTH_NONE {
		t.Fatalf("imgoff (--no-healthcheck): want a RUNNING task without health: %s", describeTasks(off))
	}

	// While a sick task runs (starting, or failing its probes), neither
	// tasks.sick nor the VIP's backends name it; its name stays known.
	checked := 0
	harness.Eventually(t, settleTimeout, 20*time.Millisecond, func() error {
		ctx, cancel := attempt()
		defer cancel()
		tasks, err := serviceTasks(ctx, cl, "sick")
		if err != nil {
			return err
		}
		var runningAddrs []string
		for _, tk := range tasks {
			if tk.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_RUNNING {
				if h := tk.GetStatus().GetHealth(); h == shoalv1.TaskHealth_TASK_HEALTH_HEALTHY || h == shoalv1.TaskHealth_TASK_HEALTH_NONE {
					t.Fatalf("sick task %s is RUNNING with health %s", tk.GetMeta().GetId(), h)
				}
				runningAddrs = append(runningAddrs, overlayAddr(tk, netID))
			}
		}
		// tasks.X names only serving tasks (NXDOMAIN without one, as for
		// a service with no running task); the service's own name stays
		// its VIP.
		_, ips, err := nsLookup(ctx, nsWeb, "tasks.sick")
		if err != nil {
			return err
		}
		if len(ips) != 0 {
			t.Fatalf("tasks.sick answers %v while its tasks are unhealthy", ips)
		}
		if rc, vip, err := nsLookup(ctx, nsWeb, "sick"); err != nil || rc != mdns.RcodeSuccess || len(vip) != 1 {
			return fmt.Errorf("sick: rcode %d %v %v, want its VIP", rc, vip, err)
		}
		backends, err := vipBackends(nsWeb)
		if err != nil {
			return err
		}
		for _, a := range runningAddrs {
			if slices.Contains(backends, a) {
				t.Fatalf("the unhealthy task's %s is a VIP backend: %v", a, backends)
			}
		}
		if len(runningAddrs) > 0 {
			checked++
		}
		if checked < 3 {
			return fmt.Errorf("checked discovery while a sick task ran %d times, want 3", checked)
		}
		return nil
	})
}
