package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	shoalnet "github.com/shoal-dev/shoal/agent/network"
	"github.com/shoal-dev/shoal/e2e/harness"
	"github.com/shoal-dev/shoal/overlay"
)

// portGet GETs http://hostIP:port/ from the client host and returns the
// answering task's hostname and the client address it saw (the demo
// server's Hostname: and RemoteAddr: lines).
func portGet(client *harness.Host, hostIP string, port int) (hostname, seen string, err error) {
	return portGetWith(client.HTTPClient(3*time.Second), hostIP, port)
}

// portGetIn is portGet from inside a task's network namespace ns.
func portGetIn(ns, hostIP string, port int) (hostname, seen string, err error) {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return shoalnet.DialContextIn(ctx, ns, network, addr)
	}}
	return portGetWith(&http.Client{Transport: tr, Timeout: 5 * time.Second}, hostIP, port)
}

func portGetWith(cl *http.Client, hostIP string, port int) (hostname, seen string, err error) {
	resp, err := cl.Get(fmt.Sprintf("http://%s:%d/", hostIP, port))
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", "", err
	}
	h := regexp.MustCompile(`Hostname: (\S+)`).FindSubmatch(body)
	r := regexp.MustCompile(`RemoteAddr: (\S+?):\d+`).FindSubmatch(body)
	if h == nil || r == nil {
		return "", "", fmt.Errorf("unexpected answer %q", body)
	}
	return string(h[1]), string(r[1]), nil
}

// TestPublishedPorts: on 3 hosts and a client host (no shoal, on the same
// fabric), a service publishing 8080 in ingress mode (one task, on host 2)
// answers on every host; a host-mode port (one task, on host 3) answers
// only on host 3; another service asking for 8080 is refused naming the
// first. It reports the client address the task saw through each host
// and asserts it is the client's own everywhere: on host 2 (the task is
// local) and through hosts 1 and 3, which run no task and forward to host
// 2 without SNAT (same underlay subnet; host 2 routes the replies back
// through the forwarding host by its MAC: fwmark rules in host 2's
// namespace). Hairpin: the hweb task reaching its host's (3) port 8080,
// forwarded to host 2, is answered (masqueraded: web sees host 3); the
// web task reaching its own host's (2) port is answered once host 2's
// bridge path is routed (br_netfilter off; with it on, reported only: a
// known limit). Deleting host 1's published-port rules
// (the nftables table and the fwmark routes) is repaired by the agent's
// repair tick, with no new network state.
func TestPublishedPorts(t *testing.T) {
	c := newCluster(t, 1, 2)
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]
	client := c.f.AddHost("client")
	cl := h1.Local()
	id2, id3 := c.id(h2), c.id(h3)

	run(t, cl, "network", "create", "app")
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "web", 1, []string{"--network", "app", "-p", "8080:8080", "--constraint", "node.id==" + id2})
		if err == nil {
			err = createServiceFlags(ctx, cl, "hweb", 1, []string{"--network", "app", "--publish", "published=9090,target=8080,mode=host",
				"--constraint", "node.id==" + id3})
		}
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	runningTasks(t, cl, "web", 1)
	runningTasks(t, cl, "hweb", 1)

	// A port conflict is refused at create, naming the other service.
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "clash", 1, []string{"--network", "app", "-p", "8080:80"})
		cancel()
		if err == nil || !strings.Contains(err.Error(), `8080/tcp is already published by service "web"`) {
			t.Fatalf("conflicting create: %v", err)
		}
	}

	// Every host has the port's DNAT rules in its namespace (kernel state).
	harness.Eventually(t, settleTimeout, 100*time.Millisecond, func() error {
		for _, h := range []*harness.Host{h1, h2, h3} {
			n, err := overlay.PortRuleCount("/run/netns/" + h.NS)
			if err != nil {
				return err
			}
			want := 1
			if h == h3 {
				want = 2 // 8080 forwarded and 9090 local
			}
			if n != want {
				return fmt.Errorf("%s has %d published-port rules, want %d", h, n, want)
			}
		}
		return nil
	})
	// Ingress: every host answers 8080, and the task sees the client.
	for _, h := range []*harness.Host{h2, h1, h3} {
		var name, seen string
		tries := 0
		harness.Eventually(t, settleTimeout, 100*time.Millisecond, func() error {
			var err error
			tries++
			name, seen, err = portGet(client, h.IP, 8080)
			return err
		})
		t.Logf("ingress 8080 via %s: task %s saw client address %s (client %s; answered at attempt %d)", h, name, seen, client.IP, tries)
		if seen != client.IP {
			t.Errorf("ingress 8080 via %s: the task saw %s, want the client %s", h, seen, client.IP)
		}
	}
	// Host 2 marks connections by the neighbour they came from and routes
	// their replies back through it (one fwmark rule per neighbour).
	if n, err := overlay.PeerRuleCount("/run/netns/" + h2.NS); err != nil || n < 2 {
		t.Errorf("%s has %d per-neighbour fwmark rules, %v; want hosts 1 and 3 at least", h2, n, err)
	}
	// Hairpin: tasks reach their own host's published port. hweb's task
	// on host 3 → host 3:8080, forwarded to host 2 (masqueraded by host
	// 3: web sees host 3's address).
	web := runningTasks(t, cl, "web", 1)[0]
	hweb := runningTasks(t, cl, "hweb", 1)[0]
	{
		var seen string
		harness.Eventually(t, settleTimeout, 100*time.Millisecond, func() error {
			var err error
			_, seen, err = portGetIn(taskNS(h3, hweb.GetMeta().GetId()), h3.IP, 8080)
			return err
		})
		t.Logf("hairpin: task of hweb on %s to %s:8080 (forwarded to %s): web saw %s", h3, h3.IP, h2, seen)
		if seen != h3.IP {
			t.Errorf("hairpin via %s: web saw %s, want %s (masqueraded by the task's node)", h3, seen, h3.IP)
		}
	}
	// web's task → its own host 2:8080 (backend on the same node). With
	// br_netfilter calling the ip hooks on the node-local bridge (this
	// machine's default), the kernel bridges the DNATed frame back to the
	// isolated port it came from and drops it: a documented limit,
	// reported here. Where the bridge path is routed (br_netfilter off in
	// the node's namespace) it works, masqueraded to the node-local
	// gateway.
	webNS := taskNS(h2, web.GetMeta().GetId())
	if _, seen, err := portGetIn(webNS, h2.IP, 8080); err != nil {
		t.Logf("hairpin on %s with br_netfilter on: %v (known limit, see README)", h2, err)
	} else {
		t.Logf("hairpin on %s with br_netfilter on: the task saw %s", h2, seen)
	}
	if _, err := os.Stat("/proc/sys/net/bridge"); err == nil {
		ctx, cancel := attempt()
		_, err := h2.Exec(ctx, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	{
		var seen string
		harness.Eventually(t, settleTimeout, 100*time.Millisecond, func() error {
			var err error
			_, seen, err = portGetIn(webNS, h2.IP, 8080)
			return err
		})
		t.Logf("hairpin on %s (routed): the task of web to %s:8080 saw %s", h2, h2.IP, seen)
		if a, err := netip.ParseAddr(seen); err != nil || a.String() == h2.IP || a.String() == client.IP {
			t.Errorf("hairpin on %s: the task saw %q; want its node's local bridge address", h2, seen)
		}
	}
	// Someone deletes host 1's rules: the agent's repair tick (30 s)
	// puts them back without a new network state.
	if err := overlay.ClearPorts("/run/netns/" + h1.NS); err != nil {
		t.Fatal(err)
	}
	cleared := time.Now()
	harness.Eventually(t, 2*settleTimeout, 200*time.Millisecond, func() error {
		if n, err := overlay.PortRuleCount("/run/netns/" + h1.NS); err != nil || n != 1 {
			return fmt.Errorf("%s has %d published-port rules, %v", h1, n, err)
		}
		return nil
	})
	t.Logf("%s: the deleted table was repaired after %v", h1, time.Since(cleared).Round(time.Second))
	harness.Eventually(t, settleTimeout, 100*time.Millisecond, func() error {
		_, seen, err := portGet(client, h1.IP, 8080)
		if err == nil && seen != client.IP {
			return fmt.Errorf("after the repair the task saw %s via %s, want %s", seen, h1, client.IP)
		}
		return err
	})
	// Host mode: only host 3 answers 9090, with the client's address.
	var seen string
	harness.Eventually(t, settleTimeout, 100*time.Millisecond, func() error {
		var err error
		_, seen, err = portGet(client, h3.IP, 9090)
		return err
	})
	t.Logf("host-mode 9090 via %s: the task saw client address %s", h3, seen)
	if seen != client.IP {
		t.Errorf("host-mode 9090 via %s: the task saw %s, want the client %s", h3, seen, client.IP)
	}
	for _, h := range []*harness.Host{h1, h2} {
		if _, _, err := portGet(client, h.IP, 9090); err == nil {
			t.Errorf("host-mode 9090 answers on %s, which runs no task of hweb", h)
		}
	}

	// Removing the service closes its port everywhere.
	run(t, cl, "service", "rm", "web")
	harness.Eventually(t, settleTimeout, 100*time.Millisecond, func() error {
		for _, h := range []*harness.Host{h1, h2, h3} {
			if _, _, err := portGet(client, h.IP, 8080); err == nil {
				return fmt.Errorf("8080 still answers on %s", h)
			}
		}
		return nil
	})
}
