package transport_test

import (
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoal-dev/shoal/manager/transport"
	"github.com/shoal-dev/shoal/trust"
)

// TestMuxRaftAdmission: a refused peer's raft connection is closed at
// once; an admitted peer that stops being admitted gets nothing more read
// from its open connection.
func TestMuxRaftAdmission(t *testing.T) {
	c := newCluster(t)
	logs := &logBuffer{}
	mux := startMux(t, c.store("m0", trust.RoleManager), logs)
	var refuseM1 atomic.Bool
	admit := func(id trust.Identity) error {
		if id.NodeID == "m2" || (id.NodeID == "m1" && refuseM1.Load()) {
			return errors.New("not a voter")
		}
		return nil
	}
	mux.AdmitRaft(admit, admit)
	accepted := acceptOne(mux.Raft())

	rc2, err := tls.Dial("tcp", mux.Addr().String(), c.store("m2", trust.RoleManager).ClientTLSConfig(trust.ManagerServerName, trust.ALPNRaft))
	if err != nil {
		t.Fatal(err)
	}
	defer rc2.Close()
	readClosed(t, rc2)
	if l := logs.String(); !strings.Contains(l, "refused raft connection") || !strings.Contains(l, "not a voter") {
		t.Fatalf("no refusal logged:\n%s", l)
	}

	rc1, err := tls.Dial("tcp", mux.Addr().String(), c.store("m1", trust.RoleManager).ClientTLSConfig(trust.ManagerServerName, trust.ALPNRaft))
	if err != nil {
		t.Fatal(err)
	}
	defer rc1.Close()
	if _, err := rc1.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	sc := waitConn(t, accepted)
	buf := make([]byte, 4)
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("admitted peer: read %q, %v", buf, err)
	}
	refuseM1.Store(true)
	if _, err := rc1.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if n, err := sc.Read(buf); err != io.EOF {
		t.Fatalf("read from a peer no longer admitted: %d bytes, %v; want EOF", n, err)
	}
	readClosed(t, rc1)
}

// admittedRaftNode is startRaftNode with the manager's raft admission: only
// voters of the node's own configuration are admitted.
func admittedRaftNode(t *testing.T, c *cluster, id string, bootstrap bool) (*raftNode, raft.Transport) {
	t.Helper()
	certs := c.store(id, trust.RoleManager)
	lb := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s logs:\n%s", id, lb.String())
		}
	})
	mux := startMux(t, certs, lb)
	var r atomic.Pointer[raft.Raft]
	admit := transport.RaftAdmission(func() (raft.Configuration, error) {
		rr := r.Load()
		if rr == nil {
			return raft.Configuration{}, nil
		}
		f := rr.GetConfiguration()
		return f.Configuration(), f.Error()
	}, func(id trust.Identity) (trust.Role, error) { return id.Role, nil })
	mux.AdmitRaft(admit, admit)
	stream := transport.NewRaftStreamLayer(mux.Raft(), mux.Addr(), func() *tls.Config {
		return certs.ClientTLSConfig(trust.ManagerServerName, trust.ALPNRaft)
	})
	trans := raft.NewNetworkTransport(stream, 3, 10*time.Second, io.Discard)
	t.Cleanup(func() { trans.Close() })
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(id)
	conf.HeartbeatTimeout = 200 * time.Millisecond
	conf.ElectionTimeout = 200 * time.Millisecond
	conf.LeaderLeaseTimeout = 100 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.LogOutput = io.Discard
	logs := raft.NewInmemStore()
	fsm := &recordFSM{applied: make(chan string, 16)}
	rr, err := raft.NewRaft(conf, fsm, logs, logs, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		t.Fatalf("NewRaft(%s): %v", id, err)
	}
	r.Store(rr)
	t.Cleanup(func() { rr.Shutdown().Error() })
	if bootstrap {
		cfg := raft.Configuration{Servers: []raft.Server{{ID: conf.LocalID, Address: trans.LocalAddr()}}}
		if err := rr.BootstrapCluster(cfg).Error(); err != nil {
			t.Fatalf("bootstrap: %v", err)
		}
	}
	return &raftNode{r: rr, fsm: fsm, addr: trans.LocalAddr()}, trans
}

// TestRemovedVoterCannotDepose is the attack of issue 7: a manager removed
// from the raft configuration sends AppendEntries with a higher term, which
// hashicorp/raft would accept from anyone and step down for. Its
// connection must be refused, and the leader keep its term.
func TestRemovedVoterCannotDepose(t *testing.T) {
	c := newCluster(t)
	n1, _ := admittedRaftNode(t, c, "m1", true)
	select {
	case <-n1.r.LeaderCh():
	case <-time.After(10 * time.Second):
		t.Fatal("m1 did not become leader")
	}
	n2, trans2 := admittedRaftNode(t, c, "m2", false)
	if err := n1.r.AddVoter("m2", n2.addr, 0, 10*time.Second).Error(); err != nil {
		t.Fatalf("AddVoter: %v", err)
	}
	// While m2 is a voter, its raft RPCs reach m1.
	term := n1.r.CurrentTerm()
	probe := func(t2 uint64) error {
		var resp raft.AppendEntriesResponse
		return trans2.AppendEntries("m1", n1.addr, &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("m2"), Addr: []byte(n2.addr)}, Term: t2, Leader: []byte(n2.addr),
		}, &resp)
	}
	if err := probe(0); err != nil {
		t.Fatalf("a stale-term AppendEntries from a voter did not reach the leader: %v", err)
	}
	if err := n1.r.RemoveServer("m2", 0, 10*time.Second).Error(); err != nil {
		t.Fatalf("RemoveServer: %v", err)
	}
	// Stop m2's own raft so only the forged RPC speaks for it.
	if err := n2.r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	if err := probe(term + 100); err == nil {
		t.Fatal("AppendEntries with a higher term from a removed voter was answered")
	}
	if got := n1.r.CurrentTerm(); got != term || n1.r.State() != raft.Leader {
		t.Fatalf("leader m1: term %d (was %d), state %s", got, term, n1.r.State())
	}
}
