package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

func TestProfileSeconds(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int
	}{{10 * time.Second, 10}, {2500 * time.Millisecond, 2}, {300 * time.Millisecond, 1}} {
		if got := profileSeconds(tc.d); got != tc.want {
			t.Errorf("profileSeconds(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

// TestProfileCellWritesEveryNode: one profile per target, named by label,
// concurrency, node and role, asked for the window's whole seconds; a node
// that cannot answer fails the cell.
func TestProfileCellWritesEveryNode(t *testing.T) {
	var asked atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/debug/pprof/profile" {
			http.NotFound(w, r)
			return
		}
		asked.Store(r.URL.Query().Get("seconds"))
		w.Write([]byte("profile of " + r.Host))
	}))
	defer srv.Close()
	host, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	targets := []profileTarget{{name: "m1", ip: host, role: "leader"}, {name: "m2", ip: host, role: "follower"}}
	if err := profileCell(context.Background(), dir, "shoal-3m", 16, targets, port, time.Now(), 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if got := asked.Load(); got != "1" {
		t.Errorf("asked for seconds=%v, want 1", got)
	}
	for _, name := range []string{"shoal-3m-c16-m1-leader.pb.gz", "shoal-3m-c16-m2-follower.pb.gz"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 {
			t.Errorf("%s is empty", name)
		}
	}

	bad := append(targets, profileTarget{name: "m3", ip: "127.0.0.1", role: "follower"})
	// A port nothing listens on: the listener is closed before the call.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, deadPort, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	if err := profileCell(context.Background(), t.TempDir(), "x", 1, bad[2:], deadPort, time.Now(), time.Second); err == nil {
		t.Error("a node that cannot be profiled did not fail the cell")
	}
}

func TestNodeEnvDebugAddrPerNode(t *testing.T) {
	e := &env{o: &options{}}
	if got := e.nodeEnv(&shoalNode{ip: "127.0.0.21"}); got != nil {
		t.Errorf("without -pprof: %q, want nothing", got)
	}
	e.o.pprofDir = t.TempDir()
	a, b := e.nodeEnv(&shoalNode{ip: "127.0.0.21"}), e.nodeEnv(&shoalNode{ip: "127.0.0.22"})
	if len(a) != 1 || a[0] != "SHOAL_DEBUG_ADDR=127.0.0.21:"+debugPort || len(b) != 1 || b[0] == a[0] {
		t.Errorf("nodeEnv = %q, %q: want SHOAL_DEBUG_ADDR on each node's own address", a, b)
	}
}
