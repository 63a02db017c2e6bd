package e2e

import (
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestDevBridgeNetwork: `shoal dev` (one node advertising 127.0.0.1, so
// no VXLAN underlay) runs services on a bridge network, as the README's
// dev lines show: service web (2 replicas, host-mode port 9093) and cli
// on network devnet. From cli's namespace `web` resolves to its VIP and
// answers over it and `tasks.web` to both replicas; web reaches cli by
// name; a real container reaches web by name (a one-shot `fetch
// http://web:8080/` through the mounted resolv.conf). The host-mode port
// answers on the node's own addresses (its fabric address and its task
// bridge's gateway) and a task on a host network on the node's address.
// A service on an overlay network is REJECTED with the reason.
func TestDevBridgeNetwork(t *testing.T) {
	f := harness.NewFabric(t)
	harness.Binary(t)
	h := f.AddHost("dev1")
	p := h.Start(t, slices.Concat([]string{"dev", "--data-dir", h.DataDir}, h.NodeFlags(t))...)
	cl := h.Local()
	harness.Eventually(t, startTimeout, poll, func() error {
		if err := p.CheckRunning(); err != nil {
			return harness.Permanent(err)
		}
		ctx, cancel := attempt()
		defer cancel()
		nodes, err := harness.List[shoalv1.Node](ctx, cl, "node", "ls")
		if err != nil {
			return err
		}
		if len(nodes) != 1 || nodes[0].GetStatus().GetState() != shoalv1.NodeState_NODE_STATE_READY {
			return fmt.Errorf("nodes %v, want one READY", nodes)
		}
		if a := nodes[0].GetStatus().GetAddr(); !strings.HasPrefix(a, "127.") {
			return harness.Permanent(fmt.Errorf("dev node address %q, want loopback", a))
		}
		return nil
	})

	run(t, cl, "network", "create", "--driver", "bridge", "--subnet", "10.230.9.0/24", "devnet")
	run(t, cl, "network", "create", "ovnet")
	run(t, cl, "network", "create", "--driver", "host", "hostnet")
	devnet := inspectNetwork(t, cl, "devnet").GetMeta().GetId()
	for _, s := range []struct {
		name     string
		replicas int
		flags    []string
		args     []string
	}{
		{"web", 2, []string{"--network", "devnet", "--publish", "published=9093,target=8080,mode=host"}, nil},
		{"cli", 1, []string{"--network", "devnet"}, nil},
		{"ovs", 1, []string{"--network", "ovnet"}, nil},
		{"hst", 1, []string{"--network", "hostnet"}, []string{"serve", "--addr", ":8088"}},
	} {
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, s.name, s.replicas, s.flags, s.args...)
		cancel()
		if err != nil {
			t.Fatalf("service %s: %v", s.name, err)
		}
	}

	// The overlay task: REJECTED with the reason (not FAILED, not RUNNING).
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		tasks, err := serviceTasks(ctx, cl, "ovs")
		if err != nil {
			return err
		}
		for _, tk := range tasks {
			st := tk.GetStatus()
			switch st.GetState() {
			case shoalv1.TaskState_TASK_STATE_REJECTED:
				if !strings.Contains(st.GetErr(), "runs no overlay networks") {
					return harness.Permanent(fmt.Errorf("ovs task rejected with %q", st.GetErr()))
				}
				return nil
			case shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_FAILED:
				return harness.Permanent(fmt.Errorf("ovs task %s (%q), want REJECTED", st.GetState(), st.GetErr()))
			}
		}
		return fmt.Errorf("ovs tasks: %s", describeTasks(tasks))
	})

	web := runningTasks(t, cl, "web", 2)
	cli := runningTasks(t, cl, "cli", 1)[0]
	var webAddrs []string
	for _, tk := range web {
		webAddrs = append(webAddrs, overlayAddr(tk, devnet))
	}
	slices.Sort(webAddrs)
	nsCli := taskNS(h, cli.GetMeta().GetId())
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		rc, ips, err := nsLookup(ctx, nsCli, "tasks.web")
		if err != nil {
			return err
		}
		if rc != mdns.RcodeSuccess || !slices.Equal(ips, webAddrs) {
			return fmt.Errorf("tasks.web: rcode %d %v, want %v", rc, ips, webAddrs)
		}
		seen := map[string]bool{}
		for range 6 {
			host, err := nsGet(ctx, nsCli, "web", 8080)
			if err != nil {
				return err
			}
			seen[host] = true
		}
		if len(seen) != 2 {
			return fmt.Errorf("the VIP of web answered as %v, want both replicas", seen)
		}
		// And the other way: a web replica reaches cli by name.
		host, err := nsGet(ctx, taskNS(h, web[0].GetMeta().GetId()), "cli", 8080)
		if err != nil {
			return err
		}
		if host != shortID(cli.GetMeta().GetId()) {
			return fmt.Errorf("cli answered as %s, want %s", host, shortID(cli.GetMeta().GetId()))
		}
		return nil
	})

	// A real container reaches web by name through the resolv.conf the
	// agent mounts (the README's probe).
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "probe", 1, []string{"--network", "devnet", "--restart-condition", "none"},
			"fetch", "http://web:8080/")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	harness.WaitTasks(t, cl, "probe", settleTimeout, func(all []*shoalv1.Task) error {
		for _, tk := range all {
			switch tk.GetStatus().GetState() {
			case shoalv1.TaskState_TASK_STATE_COMPLETE:
				return nil
			case shoalv1.TaskState_TASK_STATE_FAILED, shoalv1.TaskState_TASK_STATE_REJECTED:
				return harness.Permanent(fmt.Errorf("probe %s: %s", tk.GetStatus().GetState(), tk.GetStatus().GetErr()))
			}
		}
		return fmt.Errorf("probe not complete: %s", describeTasks(all))
	})
	{
		ctx, cancel := attempt()
		out, err := cl.Run(ctx, "service", "logs", "probe")
		cancel()
		m := regexp.MustCompile(`Hostname: (\S+)`).FindStringSubmatch(out)
		if err != nil || m == nil || !slices.Contains(shortIDs(web), m[1]) {
			t.Fatalf("probe's fetch of http://web:8080/ printed %q (%v), want a web task's hostname", out, err)
		}
	}

	// The host-mode port answers on the node's own addresses, and so does
	// the host-network task (in the node's namespace).
	hst := runningTasks(t, cl, "hst", 1)[0]
	harness.Eventually(t, settleTimeout, poll, func() error {
		resp, err := h.HTTPClient(5 * time.Second).Get(fmt.Sprintf("http://%s:8088/", h.IP))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if m := regexp.MustCompile(`Hostname: (\S+)`).FindSubmatch(body); m == nil || string(m[1]) != shortID(hst.GetMeta().GetId()) {
			return fmt.Errorf(":8088 answered %q, want the hst task", body)
		}
		return nil
	})
	for _, addr := range []string{h.IP, "10.213.0.1"} {
		harness.Eventually(t, settleTimeout, poll, func() error {
			resp, err := h.HTTPClient(5 * time.Second).Get(fmt.Sprintf("http://%s:9093/", addr))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			m := regexp.MustCompile(`Hostname: (\S+)`).FindSubmatch(body)
			if m == nil || !slices.Contains(shortIDs(web), string(m[1])) {
				return fmt.Errorf("%s:9093 answered %q, want a web task", addr, body)
			}
			return nil
		})
	}
}
