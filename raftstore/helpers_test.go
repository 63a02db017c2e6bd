package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Test clusters run raft over in-memory transports with short timeouts.
// Nothing in the tests sleeps to synchronise: they poll a condition until a
// deadline (eventually) or wait on channels.

const (
	testTimeout    = 100 * time.Millisecond
	waitFor        = 15 * time.Second // generous: 2 busy cores, -race
	rpcTimeout     = 200 * time.Millisecond
	pollInterval   = 5 * time.Millisecond
	testNodePrefix = "node-"
)

func testLogger() *slog.Logger {
	if os.Getenv("RAFTSTORE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

type clusterOpts struct {
	disk      bool
	watchRing int
	tweak     func(*Config)
}

type testNode struct {
	id    string
	addr  raft.ServerAddress
	dir   string
	trans *raft.InmemTransport
	store *Store
}

type testCluster struct {
	t     testing.TB
	opts  clusterOpts
	nodes []*testNode
}

// newCluster starts n stores: node 0 bootstraps, the others join as voters.
func newCluster(t testing.TB, n int, opts clusterOpts) *testCluster {
	t.Helper()
	c := &testCluster{t: t, opts: opts}
	for i := 0; i < n; i++ {
		nd := &testNode{id: fmt.Sprintf("%s%d", testNodePrefix, i)}
		nd.addr = raft.ServerAddress(nd.id + ":4242")
		if opts.disk {
			nd.dir = filepath.Join(t.TempDir(), nd.id)
		}
		c.nodes = append(c.nodes, nd)
	}
	c.startAll()
	t.Cleanup(c.closeAll)
	leader := c.nodes[0]
	c.eventually("node 0 leads", func() error {
		if !leader.store.IsLeader() {
			return errors.New("not leader yet")
		}
		return nil
	})
	for _, nd := range c.nodes[1:] {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		err := leader.store.AddVoter(ctx, nd.id, string(nd.addr))
		cancel()
		if err != nil {
			t.Fatalf("AddVoter(%s): %v", nd.id, err)
		}
	}
	c.waitMembers(n)
	return c
}

func (c *testCluster) config(nd *testNode, bootstrap bool) Config {
	cfg := Config{
		NodeID: nd.id, Addr: string(nd.addr), DataDir: nd.dir, InMemory: !c.opts.disk,
		Transport: nd.trans, Bootstrap: bootstrap,
		HeartbeatTimeout: testTimeout, ElectionTimeout: testTimeout, LeaderLeaseTimeout: testTimeout,
		CommitTimeout: 5 * time.Millisecond, Logger: testLogger(),
	}
	if c.opts.tweak != nil {
		c.opts.tweak(&cfg)
	}
	return cfg
}

// startAll makes fresh transports, connects them all to all and opens every
// store (from its data dir when on disk).
func (c *testCluster) startAll() {
	c.t.Helper()
	for _, nd := range c.nodes {
		_, nd.trans = raft.NewInmemTransportWithTimeout(nd.addr, rpcTimeout)
	}
	c.heal()
	for i, nd := range c.nodes {
		s, err := open(c.config(nd, i == 0), options{watchRing: c.opts.watchRing})
		if err != nil {
			c.t.Fatalf("open %s: %v", nd.id, err)
		}
		nd.store = s
	}
}

func (c *testCluster) closeAll() {
	for _, nd := range c.nodes {
		if nd.store != nil {
			if err := nd.store.Close(); err != nil {
				c.t.Errorf("close %s: %v", nd.id, err)
			}
		}
	}
}

// live returns the nodes whose store is open.
func (c *testCluster) live() []*testNode {
	var out []*testNode
	for _, nd := range c.nodes {
		select {
		case <-nd.store.done:
		default:
			out = append(out, nd)
		}
	}
	return out
}

// heal connects every transport to every other one.
func (c *testCluster) heal() {
	for _, a := range c.nodes {
		for _, b := range c.nodes {
			if a != b {
				a.trans.Connect(b.addr, b.trans)
			}
		}
	}
}

// isolate cuts nd off from everybody, both ways.
func (c *testCluster) isolate(nd *testNode) {
	nd.trans.DisconnectAll()
	for _, other := range c.nodes {
		if other != nd {
			other.trans.Disconnect(nd.addr)
		}
	}
}

func (c *testCluster) eventually(what string, cond func() error) {
	c.t.Helper()
	eventually(c.t, what, cond)
}

func eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, waitFor, err)
		}
		time.Sleep(pollInterval) // poll interval, not synchronisation
	}
}

// leader waits for exactly one ready leader among the live nodes.
func (c *testCluster) leader() *testNode {
	c.t.Helper()
	var leader *testNode
	c.eventually("a single leader", func() error {
		leader = nil
		for _, nd := range c.live() {
			if nd.store.IsLeader() {
				if leader != nil {
					return fmt.Errorf("two leaders: %s and %s", leader.id, nd.id)
				}
				leader = nd
			}
		}
		if leader == nil {
			return errors.New("no leader")
		}
		return nil
	})
	return leader
}

func (c *testCluster) waitMembers(n int) {
	c.t.Helper()
	c.eventually(fmt.Sprintf("%d members everywhere", n), func() error {
		for _, nd := range c.live() {
			ms, err := nd.store.Members()
			if err != nil {
				return err
			}
			if len(ms) != n {
				return fmt.Errorf("%s sees %d members", nd.id, len(ms))
			}
		}
		return nil
	})
}

// update runs an Update on the current leader, retrying when leadership
// moves before the change is proposed or committed. fn must tolerate a
// retry after an attempt that did commit (the tests' fns check first).
func (c *testCluster) update(fn func(WriteTx) error) uint64 {
	c.t.Helper()
	var idx uint64
	c.eventually("update on the leader", func() error {
		var err error
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		idx, err = c.leader().store.Update(ctx, fn)
		if err != nil && !errors.Is(err, ErrNotLeader) && !errors.Is(err, context.DeadlineExceeded) {
			c.t.Fatalf("update: %v", err)
		}
		return err
	})
	return idx
}

// converge waits until every live node's state equals want and its applied
// index is at least index.
func (c *testCluster) converge(want string, index uint64) {
	c.t.Helper()
	c.eventually("replicas converge", func() error {
		for _, nd := range c.live() {
			v := nd.store.View()
			if v.Index() < index {
				return fmt.Errorf("%s applied %d < %d", nd.id, v.Index(), index)
			}
			if got := dump(v); got != want {
				return fmt.Errorf("%s differs:\n%s\nwant:\n%s", nd.id, got, want)
			}
		}
		return nil
	})
}

// dump renders a reader's whole state canonically, so two replicas can be
// compared with ==.
func dump(r Reader) string {
	var b strings.Builder
	for _, kind := range Kinds {
		for _, o := range r.List(kind) {
			data, err := proto.MarshalOptions{Deterministic: true}.Marshal(o)
			if err != nil {
				panic(err)
			}
			fmt.Fprintf(&b, "%s %s v%d %x\n", kind, o.GetMeta().GetId(), o.GetMeta().GetVersion(), data)
		}
	}
	return b.String()
}

// ids lists the ids of objects, in order.
func ids[T Object](objs []T) []string {
	out := make([]string, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.GetMeta().GetId())
	}
	return out
}

func mkService(id, name string) *shoalv1.Service {
	return &shoalv1.Service{Meta: &shoalv1.Meta{Id: id}, Spec: &shoalv1.ServiceSpec{Name: name, Replicas: 1}}
}

func mkTask(id, service, node string, desired, state shoalv1.TaskState) *shoalv1.Task {
	return &shoalv1.Task{
		Meta: &shoalv1.Meta{Id: id}, ServiceId: service, NodeId: node, DesiredState: desired,
		Status: &shoalv1.TaskStatus{State: state},
	}
}

func mkNetwork(id, name string) *shoalv1.Network {
	return &shoalv1.Network{Meta: &shoalv1.Meta{Id: id}, Spec: &shoalv1.NetworkSpec{Name: name, Driver: "overlay"}}
}

func mkNode(id, name, hostname string) *shoalv1.Node {
	return &shoalv1.Node{Meta: &shoalv1.Meta{Id: id}, Spec: &shoalv1.NodeSpec{Name: name},
		Description: &shoalv1.NodeDescription{Hostname: hostname}}
}

// createIfMissing is an idempotent create for retried updates.
func createIfMissing(objs ...Object) func(WriteTx) error {
	return func(tx WriteTx) error {
		for _, o := range objs {
			if tx.Get(KindOf(o), o.GetMeta().GetId()) != nil {
				continue
			}
			if err := tx.Create(proto.Clone(o).(Object)); err != nil {
				return err
			}
		}
		return nil
	}
}

// single opens a one-node in-memory store that leads.
func single(t testing.TB, opts options, tweak ...func(*Config)) *Store {
	t.Helper()
	_, trans := raft.NewInmemTransportWithTimeout("solo:4242", rpcTimeout)
	cfg := Config{
		NodeID: "solo", InMemory: true, Transport: trans, Bootstrap: true,
		HeartbeatTimeout: testTimeout, ElectionTimeout: testTimeout, LeaderLeaseTimeout: testTimeout,
		CommitTimeout: 5 * time.Millisecond, Logger: testLogger(),
	}
	for _, f := range tweak {
		f(&cfg)
	}
	s, err := open(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	eventually(t, "solo leads", func() error {
		if !s.IsLeader() {
			return errors.New("not leader")
		}
		return nil
	})
	return s
}

func mustUpdate(t testing.TB, s *Store, fn func(WriteTx) error) uint64 {
	t.Helper()
	idx, err := s.Update(context.Background(), fn)
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	return idx
}

// collect reads n events from a subscription or fails.
func collect(t testing.TB, sub Subscription, n int) []*shoalv1.WatchEvent {
	t.Helper()
	var out []*shoalv1.WatchEvent
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	for len(out) < n {
		select {
		case ev, ok := <-sub.C():
			if !ok {
				t.Fatalf("subscription ended after %d of %d events: %v", len(out), n, sub.Err())
			}
			out = append(out, ev)
		case <-timer.C:
			t.Fatalf("got %d of %d events", len(out), n)
		}
	}
	return out
}

// ended drains a subscription until it ends and returns why.
func ended(t testing.TB, sub Subscription) error {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-sub.C():
			if !ok {
				return sub.Err()
			}
		case <-timer.C:
			t.Fatal("subscription did not end")
		}
	}
}

// syncBuffer is a goroutine-safe bytes.Buffer for log output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// forceOp adds op to the entry as is, without the tx's checks (tests of
// what the FSM refuses).
func (tx *writeTx) forceOp(op *shoalv1.StoreOp) error {
	o := Unwrap(op.GetObject())
	k := objKey{KindOf(o), o.GetMeta().GetId()}
	tx.add(k, pendingOp{op: op.GetKind(), obj: o, expected: op.GetExpectedVersion()})
	return nil
}

// liveHeap is the heap's live bytes after two collections (the second
// frees what the first's finalizers released).
func liveHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
