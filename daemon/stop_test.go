package daemon

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/datadir"
)

// TestFailedStartStopsManager: a restart that fails after its manager is
// up (here a bad --agent-addr) stops that manager before returning: its
// context is not the daemon's (it outlives it by the agent's goodbye), so
// nothing else would, and it would keep the node's ports and raft store.
func TestFailedStartStopsManager(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m1")
	out := &syncBuffer{}
	ictx, stopInit := context.WithCancel(context.Background())
	initDone := make(chan error, 1)
	go func() {
		initDone <- Init(ictx, Options{DataDir: dir, AdvertiseAddr: freeAddr(t), NoExecutor: true, Out: out, Logger: quietLogger(t)})
	}()
	eventually(t, 15*time.Second, func() error {
		if !tokenRE.MatchString(out.String()) {
			return fmt.Errorf("init not ready yet: %q", out.String())
		}
		return nil
	})
	stopInit()
	if err := <-initDone; err != nil {
		t.Fatalf("init: %v", err)
	}

	st, err := datadir.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = Run(ctx, Options{DataDir: dir, AgentAddr: "no-such-host:7000", NoExecutor: true, Logger: quietLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "--agent-addr") {
		t.Fatalf("Run with a bad --agent-addr: %v", err)
	}
	ln, err := net.Listen("tcp", st.ListenAddr)
	if err != nil {
		t.Fatalf("the manager's address is still taken after Run returned: %v", err)
	}
	ln.Close()
}
