package health

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/shoal-dev/shoal/netnsrun"
)

// taskNS makes a network namespace with loopback up and a listener on
// 127.0.0.1 inside it, as a task's would be. It returns the namespace's
// path and the listener; both go when the test ends.
func taskNS(t *testing.T) (string, net.Listener) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (network namespaces)")
	}
	var h netns.NsHandle
	var ln net.Listener
	err := netnsrun.Run(netns.None(), func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		if h, err = netns.Get(); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		if h.IsOpen() {
			h.Close()
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); h.Close() }) // the namespace goes with its last reference
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(h)), ln
}

func port(ln net.Listener) uint32 { return uint32(ln.Addr().(*net.TCPAddr).Port) }

func TestHTTPProbeInTaskNamespace(t *testing.T) {
	ns, ln := taskNS(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/sick", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "database down", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/sick", http.StatusFound) })
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	tests := []struct {
		path string
		ok   bool
		out  string
	}{
		{"/health", true, "200 OK\nok"},
		{"/sick", false, "503 Service Unavailable\ndatabase down"},
		{"/moved", true, "302 Found"}, // 3xx is healthy, not followed
		{"/nope", false, "404"},
	}
	for _, tc := range tests {
		r := HTTPProbe{NetNS: ns, Port: port(ln), Path: tc.path}.Probe(ctx)
		if r.OK != tc.ok || !strings.Contains(r.Output, tc.out) {
			t.Errorf("%s: %+v, want ok %v output with %q", tc.path, r, tc.ok, tc.out)
		}
	}
	// The same port on the host's loopback is not the task's: nothing (or
	// something else) answers there, never our handler.
	if r := (HTTPProbe{Port: port(ln), Path: "/health"}).Probe(ctx); r.OK && strings.Contains(r.Output, "200 OK\nok") {
		t.Errorf("the probe reached the task's server from the host namespace: %+v", r)
	}
}

func TestTCPProbeInTaskNamespace(t *testing.T) {
	ns, ln := taskNS(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if r := (TCPProbe{NetNS: ns, Port: port(ln)}).Probe(ctx); !r.OK {
		t.Fatalf("listening port: %+v", r)
	}
	p := port(ln)
	ln.Close()
	if r := (TCPProbe{NetNS: ns, Port: p}).Probe(ctx); r.OK || !strings.Contains(r.Output, "refused") {
		t.Fatalf("closed port: %+v", r)
	}
}

func TestHTTPProbeTimeout(t *testing.T) {
	ns, ln := taskNS(t)
	// Accepts and never answers.
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { <-block; c.Close() }()
		}
	}()
	m := NewMachine(Check{Interval: time.Millisecond, Timeout: 50 * time.Millisecond, Retries: 1}, time.Now(), Status{})
	var news []Status
	err := Run(context.Background(), m, HTTPProbe{NetNS: ns, Port: port(ln), Path: "/"}, RealClock, func(s Status) { news = append(news, s) })
	if err != nil || len(news) != 1 || news[0].Health != unhealthy || !strings.Contains(news[0].Output, "timed out") {
		t.Fatalf("err %v news %+v", err, news)
	}
}
