package transport_test

import (
	"crypto/tls"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoal-dev/shoal/manager/transport"
	"github.com/shoal-dev/shoal/trust"
)

// recordFSM passes every applied command to a channel.
type recordFSM struct{ applied chan string }

func (f *recordFSM) Apply(l *raft.Log) any {
	if l.Type == raft.LogCommand {
		f.applied <- string(l.Data)
	}
	return nil
}

func (f *recordFSM) Snapshot() (raft.FSMSnapshot, error) { return noSnapshot{}, nil }
func (f *recordFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

type noSnapshot struct{}

func (noSnapshot) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (noSnapshot) Release()                             {}

type raftNode struct {
	r    *raft.Raft
	fsm  *recordFSM
	addr raft.ServerAddress
}

// startRaftNode runs a raft server with in-memory stores whose transport is
// a NetworkTransport over the mux's raft listener.
func startRaftNode(t *testing.T, c *cluster, id string, bootstrap bool) *raftNode {
	t.Helper()
	certs := c.store(id, trust.RoleManager)
	mux := startMux(t, certs, nil)
	stream := transport.NewRaftStreamLayer(mux.Raft(), mux.Addr(), func() *tls.Config {
		return certs.ClientTLSConfig(trust.ManagerServerName, trust.ALPNRaft)
	})
	trans := raft.NewNetworkTransport(stream, 3, 10*time.Second, io.Discard)

	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(id)
	// Generous for a loaded machine: a missed heartbeat must not cost the
	// leadership in the middle of the test.
	conf.HeartbeatTimeout = 500 * time.Millisecond
	conf.ElectionTimeout = 500 * time.Millisecond
	conf.LeaderLeaseTimeout = 250 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.LogOutput = io.Discard
	logs := raft.NewInmemStore()
	fsm := &recordFSM{applied: make(chan string, 16)}
	r, err := raft.NewRaft(conf, fsm, logs, logs, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		t.Fatalf("NewRaft(%s): %v", id, err)
	}
	t.Cleanup(func() {
		if err := r.Shutdown().Error(); err != nil {
			t.Errorf("raft shutdown %s: %v", id, err)
		}
	})
	if bootstrap {
		cfg := raft.Configuration{Servers: []raft.Server{{ID: conf.LocalID, Address: trans.LocalAddr()}}}
		if err := r.BootstrapCluster(cfg).Error(); err != nil {
			t.Fatalf("bootstrap: %v", err)
		}
	}
	return &raftNode{r: r, fsm: fsm, addr: trans.LocalAddr()}
}

func TestRaftOverMux(t *testing.T) {
	c := newCluster(t)
	n1 := startRaftNode(t, c, "m1", true)
	select {
	case leader := <-n1.r.LeaderCh():
		if !leader {
			t.Fatal("m1 lost leadership")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("m1 did not become leader")
	}

	n2 := startRaftNode(t, c, "m2", false)
	// AddVoter commits only once m2 has acknowledged the new configuration,
	// so this exchanges AppendEntries both ways over TLS.
	if err := n1.r.AddVoter("m2", n2.addr, 0, 10*time.Second).Error(); err != nil {
		t.Fatalf("AddVoter: %v", err)
	}
	if err := n1.r.Apply([]byte("hello"), 10*time.Second).Error(); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	select {
	case got := <-n2.fsm.applied:
		if got != "hello" {
			t.Fatalf("m2 applied %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("m2 did not apply the command")
	}
	if addr, id := n2.r.LeaderWithID(); id != "m1" || addr != n1.addr {
		t.Errorf("m2 sees leader %q at %s", id, addr)
	}
}

func TestRaftDialVerifiesManager(t *testing.T) {
	c := newCluster(t)
	manager := c.store("m1", trust.RoleManager)
	// A worker's port (it would not serve raft, but could try to pose).
	worker := startMux(t, c.store("w1", trust.RoleWorker), nil)

	stream := transport.NewRaftStreamLayer(nil, worker.Addr(), func() *tls.Config {
		// Deliberately without ServerName or ALPN: Dial fills them in.
		return manager.ClientTLSConfig("", "")
	})
	if stream.Addr() != worker.Addr() {
		t.Errorf("Addr = %v, want the advertised address", stream.Addr())
	}
	_, err := stream.Dial(raft.ServerAddress(worker.Addr().String()), 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "not "+trust.ManagerServerName) {
		t.Fatalf("Dial to a worker certificate: %v, want a name mismatch", err)
	}
}
