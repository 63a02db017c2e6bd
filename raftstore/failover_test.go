package raftstore

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Failover on a closed leader connection (third_party/hashicorp/raft's
// SHOAL-PATCH.md): three stores on disk over hashicorp/raft's
// NetworkTransport on TLS over loopback TCP, with long timeouts once the
// cluster has formed, so only the closed connections can explain a quick
// election.

const (
	failLongTimeout = 5 * time.Second
	// failQuick is far below failLongTimeout: without the patch a follower
	// waits at least failLongTimeout before it campaigns.
	failQuick = 2500 * time.Millisecond
	// failFormTimeout is the timeouts the cluster forms with, and the
	// leader lease throughout (not reloadable): a leader with no answer
	// for that long (a slow fsync on a loaded machine) steps down.
	failFormTimeout = 500 * time.Millisecond
)

// failTLS returns a server and a client TLS configuration sharing one
// self-signed certificate for 127.0.0.1.
func failTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "raftstore-test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	pair := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS13},
		&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
}

// trackedConn is a connection the test stream layer made or accepted.
type trackedConn struct {
	net.Conn
	target string // dialed address; "" when accepted
	once   sync.Once
	closed chan struct{}
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

func (c *trackedConn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// tlsStream is a raft.StreamLayer over TLS on loopback that records its
// connections, so a test can close them as a dying process's kernel does
// (kill) and refuse dials to a peer (block).
type tlsStream struct {
	ln     net.Listener
	client *tls.Config

	mu      sync.Mutex
	conns   []*trackedConn
	dead    bool
	blocked map[string]bool
}

func (s *tlsStream) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, closed: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		c.Close()
		return nil, net.ErrClosed
	}
	s.conns = append(s.conns, tc)
	return tc, nil
}

func (s *tlsStream) Close() error   { return s.ln.Close() }
func (s *tlsStream) Addr() net.Addr { return s.ln.Addr() }

func (s *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	s.mu.Lock()
	refused := s.dead || s.blocked[string(addr)]
	s.mu.Unlock()
	if refused {
		return nil, fmt.Errorf("test: dial %s refused", addr)
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", string(addr), s.client)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, target: string(addr), closed: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead || s.blocked[string(addr)] {
		c.Close()
		return nil, fmt.Errorf("test: dial %s refused", addr)
	}
	s.conns = append(s.conns, tc)
	return tc, nil
}

// kill closes the listener and every connection and refuses new ones.
func (s *tlsStream) kill() {
	s.mu.Lock()
	s.dead = true
	conns := s.conns
	s.mu.Unlock()
	s.ln.Close()
	for _, c := range conns {
		c.Close()
	}
}

// block refuses (on) or allows dials to addr; blocking closes the open
// connections dialed to addr and returns how many there were.
func (s *tlsStream) block(addr string, on bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blocked[addr] = on
	closed := 0
	for _, c := range s.conns {
		if on && c.target == addr && !c.isClosed() {
			c.Close()
			closed++
		}
	}
	return closed
}

// dialedTo returns the connections this node dialed to addr.
func (s *tlsStream) dialedTo(addr string) []*trackedConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*trackedConn
	for _, c := range s.conns {
		if c.target == addr {
			out = append(out, c)
		}
	}
	return out
}

// acceptedFrom returns the accepted connection whose remote end is remote.
func (s *tlsStream) acceptedFrom(remote string) *trackedConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		if c.target == "" && c.RemoteAddr().String() == remote {
			return c
		}
	}
	return nil
}

// hintTrans is the NetworkTransport with its leader-connection reports
// recorded on their way to raft.
type hintTrans struct {
	*raft.NetworkTransport
	out  chan raft.LeaderConnLoss
	stop chan struct{}
	done chan struct{}

	mu  sync.Mutex
	got []raft.LeaderConnLoss
}

func newHintTrans(nt *raft.NetworkTransport) *hintTrans {
	h := &hintTrans{NetworkTransport: nt, out: make(chan raft.LeaderConnLoss, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		for {
			select {
			case loss := <-nt.LeaderConnLost():
				h.mu.Lock()
				h.got = append(h.got, loss)
				h.mu.Unlock()
				select {
				case h.out <- loss:
				case <-h.stop:
					return
				}
			case <-h.stop:
				return
			}
		}
	}()
	return h
}

func (h *hintTrans) LeaderConnLost() <-chan raft.LeaderConnLoss { return h.out }

func (h *hintTrans) hints() []raft.LeaderConnLoss {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]raft.LeaderConnLoss(nil), h.got...)
}

type failNode struct {
	id     string
	addr   string
	stream *tlsStream
	trans  *hintTrans
	store  *Store
}

// failoverCluster starts three stores on disk (node 0 bootstraps and
// leads, the others join) with failFormTimeout, then sets
// failLongTimeout as heartbeat and election timeout everywhere. maxPool is
// every transport's connection pool size.
func failoverCluster(t *testing.T, maxPool int) []*failNode {
	t.Helper()
	serverTLS, clientTLS := failTLS(t)
	dir := t.TempDir()
	var nodes []*failNode
	t.Cleanup(func() {
		for _, nd := range nodes {
			if err := nd.store.Close(); err != nil {
				t.Errorf("close %s: %v", nd.id, err)
			}
			close(nd.trans.stop)
			<-nd.trans.done
			nd.stream.kill()
		}
	})
	for i := 0; i < 3; i++ {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS)
		if err != nil {
			t.Fatal(err)
		}
		stream := &tlsStream{ln: ln, client: clientTLS, blocked: map[string]bool{}}
		trans := newHintTrans(raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: stream, MaxPool: maxPool, Timeout: 2 * time.Second, Logger: hclog.NewNullLogger(),
		}))
		nd := &failNode{id: fmt.Sprintf("%s%d", testNodePrefix, i), addr: ln.Addr().String(), stream: stream, trans: trans}
		s, err := open(Config{
			NodeID: nd.id, Addr: nd.addr, DataDir: filepath.Join(dir, nd.id), Transport: trans, Bootstrap: i == 0,
			HeartbeatTimeout: failFormTimeout, ElectionTimeout: failFormTimeout, LeaderLeaseTimeout: failFormTimeout,
			CommitTimeout: 5 * time.Millisecond, Logger: testLogger(),
		}, options{})
		if err != nil {
			trans.Close()
			t.Fatalf("open %s: %v", nd.id, err)
		}
		nd.store = s
		nodes = append(nodes, nd)
	}
	leader := nodes[0]
	eventually(t, "node 0 leads", func() error {
		if !leader.store.IsLeader() {
			return errors.New("not yet")
		}
		return nil
	})
	for _, nd := range nodes[1:] {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		err := leader.store.AddVoter(ctx, nd.id, nd.addr)
		cancel()
		if err != nil {
			t.Fatalf("AddVoter(%s): %v", nd.id, err)
		}
	}
	for _, nd := range nodes {
		rc := nd.store.Raft().ReloadableConfig()
		rc.HeartbeatTimeout, rc.ElectionTimeout = failLongTimeout, failLongTimeout
		if err := nd.store.Raft().ReloadConfig(rc); err != nil {
			t.Fatal(err)
		}
	}
	failWrite(t, leader, "formed", nodes...)
	return nodes
}

// failWrite commits a cluster object named name on leader and waits until
// every node in applied holds it.
func failWrite(t *testing.T, leader *failNode, name string, applied ...*failNode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	idx, err := leader.store.Update(ctx, createIfMissing(&shoalv1.Cluster{Meta: &shoalv1.Meta{Id: name}, Name: name}))
	if err != nil {
		t.Fatalf("write %s on %s: %v", name, leader.id, err)
	}
	eventually(t, "the write applied everywhere", func() error {
		for _, nd := range applied {
			if got := nd.store.AppliedIndex(); got < idx {
				return fmt.Errorf("%s applied %d < %d", nd.id, got, idx)
			}
		}
		return nil
	})
}

// failNewLeader waits for one of nodes to lead and returns it with the time
// it took since start.
func failNewLeader(t *testing.T, start time.Time, nodes ...*failNode) (*failNode, time.Duration) {
	t.Helper()
	var leader *failNode
	eventually(t, "a new leader", func() error {
		for _, nd := range nodes {
			if nd.store.IsLeader() {
				leader = nd
				return nil
			}
		}
		return errors.New("none yet")
	})
	return leader, time.Since(start)
}

func terms(nodes ...*failNode) []uint64 {
	var out []uint64
	for _, nd := range nodes {
		out = append(out, nd.store.Raft().CurrentTerm())
	}
	return out
}

// A leader that stops (raft, transport and listener closed) is replaced
// well before the election timeout: its followers saw its connections
// close.
func TestFailoverOnLeaderStop(t *testing.T) {
	nodes := failoverCluster(t, 8)
	old, followers := nodes[0], nodes[1:]
	start := time.Now()
	if err := old.store.Close(); err != nil {
		t.Fatal(err)
	}
	leader, took := failNewLeader(t, start, followers...)
	if took > failQuick {
		t.Fatalf("new leader after %v, want < %v (election timeout %v)", took, failQuick, failLongTimeout)
	}
	t.Logf("%s leads after %v", leader.id, took)
	failWrite(t, leader, "after-stop", followers...)
}

// A leader whose process dies (every socket closed at once, nothing
// shut down in order) is replaced as quickly.
func TestFailoverOnLeaderCrash(t *testing.T) {
	nodes := failoverCluster(t, 8)
	old, followers := nodes[0], nodes[1:]
	start := time.Now()
	old.stream.kill()
	leader, took := failNewLeader(t, start, followers...)
	if took > failQuick {
		t.Fatalf("new leader after %v, want < %v (election timeout %v)", took, failQuick, failLongTimeout)
	}
	t.Logf("%s leads after %v", leader.id, took)
	failWrite(t, leader, "after-crash", followers...)
}

// A false report (a live leader closed every connection to one follower
// and cannot redial it for a while) costs that follower a refused
// pre-vote: the leader and the other follower still hear each other and
// refuse it, no term increases, the leader stays, writes commit.
func TestFailoverFalseHintCostsAPreVote(t *testing.T) {
	nodes := failoverCluster(t, 8)
	leader, f1, f2 := nodes[0], nodes[1], nodes[2]
	before := terms(nodes...)
	// The leader and f2 record the pre-vote requests they receive.
	preVotes := make(chan raft.Observation, 16)
	for _, nd := range []*failNode{leader, f2} {
		obs := raft.NewObserver(preVotes, false, func(o *raft.Observation) bool {
			_, ok := o.Data.(raft.RequestPreVoteRequest)
			return ok
		})
		nd.store.Raft().RegisterObserver(obs)
		defer nd.store.Raft().DeregisterObserver(obs)
	}

	start := time.Now()
	if leader.stream.block(f1.addr, true) == 0 {
		t.Fatal("the leader had no open connection to f1")
	}
	eventually(t, "f1 campaigns", func() error {
		if st := f1.store.Raft().State(); st != raft.Candidate {
			return fmt.Errorf("f1 is %v", st)
		}
		return nil
	})
	if took := time.Since(start); took > failQuick {
		t.Fatalf("f1 campaigned after %v, want < %v", took, failQuick)
	}
	if h := f1.trans.hints(); len(h) == 0 || h[len(h)-1].ID != raft.ServerID(leader.id) {
		t.Fatalf("f1's transport reported %+v, want the leader %s", h, leader.id)
	}
	// Both refuse f1's pre-vote: each received it and answered.
	from := map[string]bool{}
	deadline := time.After(waitFor)
	for len(from) < 2 {
		select {
		case o := <-preVotes:
			from[o.Raft.String()] = true
		case <-deadline:
			t.Fatalf("pre-vote requests seen by %v, want the leader and f2", from)
		}
	}
	if got := terms(nodes...); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatalf("terms %v after the false report, want %v", got, before)
	}
	leader.stream.block(f1.addr, false)
	eventually(t, "f1 follows the leader again", func() error {
		_, id := f1.store.Raft().LeaderWithID()
		if st := f1.store.Raft().State(); st != raft.Follower || id != raft.ServerID(leader.id) {
			return fmt.Errorf("f1 is %v with leader %q", st, id)
		}
		return nil
	})
	if !leader.store.IsLeader() {
		t.Fatal("the leader lost its leadership")
	}
	failWrite(t, leader, "after-false-hint", nodes...)
	if got := terms(nodes...); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatalf("terms %v after the false report, want %v", got, before)
	}
}

// Spare pooled connections a live leader closes (returned to a full pool)
// are not its last: they are not reported.
func TestFailoverPooledSparesNotReported(t *testing.T) {
	nodes := failoverCluster(t, 1)
	leader, f1 := nodes[0], nodes[1]
	before := terms(nodes...)
	hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(leader.id),
		Addr: leader.trans.EncodePeer(raft.ServerID(leader.id), raft.ServerAddress(leader.addr))}
	// Heartbeats sent at once take a connection each; all but one are
	// closed when returned to the pool of one.
	var spares []*trackedConn
	eventually(t, "the leader closes spare pooled connections to f1", func() error {
		var wg sync.WaitGroup
		ready := make(chan struct{})
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-ready
				var resp raft.AppendEntriesResponse
				req := raft.AppendEntriesRequest{RPCHeader: hdr, Term: before[0]}
				if err := leader.trans.AppendEntries(raft.ServerID(f1.id), raft.ServerAddress(f1.addr), &req, &resp); err != nil {
					t.Errorf("heartbeat: %v", err)
				}
			}()
		}
		close(ready)
		wg.Wait()
		spares = spares[:0]
		for _, c := range leader.stream.dialedTo(f1.addr) {
			if c.isClosed() {
				spares = append(spares, c)
			}
		}
		if len(spares) == 0 {
			return errors.New("no spare closed")
		}
		return nil
	})
	// f1's transport has seen each spare end once it closed its side.
	eventually(t, "f1 handled the closed spares", func() error {
		for _, c := range spares {
			in := f1.stream.acceptedFrom(c.LocalAddr().String())
			if in == nil || !in.isClosed() {
				return fmt.Errorf("f1's end of %s still open", c.LocalAddr())
			}
		}
		return nil
	})
	if h := f1.trans.hints(); len(h) != 0 {
		t.Fatalf("f1's transport reported %+v after %d spare connections closed", h, len(spares))
	}
	failWrite(t, leader, "after-spares", nodes...)
	if got := terms(nodes...); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatalf("terms %v, want %v", got, before)
	}
	if st := f1.store.Raft().State(); st != raft.Follower {
		t.Fatalf("f1 is %v", st)
	}
}
