package e2e

import (
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
	"github.com/shoal-dev/shoal/overlay"
)

// portGet GETs http://hostIP:port/ from the client host and returns the
// answering task's hostname and the client address it saw (the demo
// server's Hostname: and RemoteAddr: lines).
func portGet(client *harness.Host, hostIP string, port int) (hostname, seen string, err error) {
	cl := client.HTTPClient(3 * time.Second)
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
// and asserts it is the client's own where the task is local (host 2 for
// ingress, host 3 for host mode) and the receiving host's otherwise.
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
	// Ingress: every host answers 8080.
	for _, h := range []*harness.Host{h2, h1, h3} {
		want := h.IP // forwarded to host 2: masqueraded by the receiving host
		if h == h2 {
			want = client.IP // the task is local: the client's address is kept
		}
		var name, seen string
		harness.Eventually(t, settleTimeout, 100*time.Millisecond, func() error {
			var err error
			name, seen, err = portGet(client, h.IP, 8080)
			return err
		})
		t.Logf("ingress 8080 via %s: task %s saw client address %s", h, name, seen)
		if seen != want {
			t.Errorf("ingress 8080 via %s: the task saw %s, want %s", h, seen, want)
		}
	}
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
