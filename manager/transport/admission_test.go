package transport_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/manager/transport"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

func openStore(t *testing.T) *raftstore.Store {
	t.Helper()
	_, trans := raft.NewInmemTransport("solo:1")
	st, err := raftstore.Open(raftstore.Config{
		NodeID: "solo", InMemory: true, Transport: trans, Bootstrap: true,
		HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	poll(t, "leadership", st.IsLeader)
	return st
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func write(t *testing.T, st *raftstore.Store, fn func(tx raftstore.WriteTx) error) {
	t.Helper()
	if _, err := st.Update(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

// nodesOf is the manager's lookup: the node object, or whether the cluster
// lists the id as removed.
func nodesOf(st *raftstore.Store) trust.NodeLookup {
	return func(id string) (*shoalv1.Node, bool) {
		view := st.View()
		if n, ok := raftstore.Get[*shoalv1.Node](view, id); ok {
			return n, false
		}
		c, _ := raftstore.ClusterOf(view)
		return nil, slices.Contains(c.GetRemovedNodes(), id)
	}
}

func managerNode(id string) *shoalv1.Node {
	return &shoalv1.Node{Meta: &shoalv1.Meta{Id: id}, Role: shoalv1.NodeRole_NODE_ROLE_MANAGER,
		Spec: &shoalv1.NodeSpec{DesiredRole: shoalv1.NodeRole_NODE_ROLE_MANAGER}}
}

// TestCachedAdmissionCutsTheNextRPC: the raft re-check's store part is
// reused while no node or cluster object changes (other writes do not
// count), and a demotion, a removal or a role the store no longer agrees
// with is refused by the very next check after the write returns — over
// 200 demotions and promotions back to back, so no hand-off can hide one.
// When the generation's subscription ends, every check is full again.
func TestCachedAdmissionCutsTheNextRPC(t *testing.T) {
	st := openStore(t)
	write(t, st, func(tx raftstore.WriteTx) error {
		if err := tx.Create(&shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "c"}}); err != nil {
			return err
		}
		return tx.Create(managerNode("m2"))
	})
	admit, m2, full, stop := cachedRaftAdmission(t, st)
	// The generation is live once a check is reused. (One call per poll:
	// two calls wanting one full check between them missed the moment
	// the generation went live between them, and then never saw a full
	// check again: a flake under -race.)
	_ = admit(m2)
	poll(t, "a reused verdict", func() bool {
		before := *full
		_ = admit(m2)
		return *full == before
	})
	if err := admit(m2); err != nil {
		t.Fatalf("m2 refused: %v", err)
	}
	before := *full
	write(t, st, func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Service{Meta: &shoalv1.Meta{Id: "s"}, Spec: &shoalv1.ServiceSpec{Name: "s"}})
	})
	if err := admit(m2); err != nil || *full != before {
		t.Fatalf("after a service write: err %v, %d full checks (want %d: the verdict reused)", err, *full, before)
	}
	setDesired := func(role shoalv1.NodeRole) {
		write(t, st, func(tx raftstore.WriteTx) error {
			n, _ := raftstore.Get[*shoalv1.Node](tx, "m2")
			n = proto.Clone(n).(*shoalv1.Node)
			n.Spec.DesiredRole = role
			return tx.Update(n)
		})
	}
	for i := range 200 {
		setDesired(shoalv1.NodeRole_NODE_ROLE_WORKER)
		if err := admit(m2); err == nil {
			t.Fatalf("round %d: a manager being demoted was admitted", i)
		}
		setDesired(shoalv1.NodeRole_NODE_ROLE_MANAGER)
		if err := admit(m2); err != nil {
			t.Fatalf("round %d: promoted again, refused: %v", i, err)
		}
	}
	// Its role no longer the certificate's (demotion done).
	write(t, st, func(tx raftstore.WriteTx) error {
		n, _ := raftstore.Get[*shoalv1.Node](tx, "m2")
		n = proto.Clone(n).(*shoalv1.Node)
		n.Role = shoalv1.NodeRole_NODE_ROLE_WORKER
		return tx.Update(n)
	})
	if err := admit(m2); !errors.Is(err, trust.ErrNotCurrent) {
		t.Fatalf("a worker's manager certificate: %v, want ErrNotCurrent", err)
	}
	// Removed: the node object goes, the cluster lists it.
	write(t, st, func(tx raftstore.WriteTx) error {
		if err := tx.Delete(raftstore.KindNode, "m2", 0); err != nil {
			return err
		}
		c, _ := raftstore.ClusterOf(tx)
		c = proto.Clone(c).(*shoalv1.Cluster)
		c.RemovedNodes = append(c.RemovedNodes, "m2")
		return tx.Update(c)
	})
	if err := admit(m2); !errors.Is(err, trust.ErrNodeRemoved) {
		t.Fatalf("a removed manager: %v, want ErrNodeRemoved", err)
	}
	// Without the subscription, nothing is reused.
	stop()
	poll(t, "full checks once the generation stops", func() bool {
		before := *full
		_ = admit(m2)
		_ = admit(m2)
		return *full == before+2
	})
}

// BenchmarkRaftReadmission: the check on each raft read, in full (a store
// view, the node, the cluster object) and reused through the generation.
func BenchmarkRaftReadmission(b *testing.B) {
	t := &testing.T{}
	st := openStore(t)
	defer st.Close()
	if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error {
		if err := tx.Create(&shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "c"}}); err != nil {
			return err
		}
		return tx.Create(managerNode("m2"))
	}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gen := transport.WatchStoreGeneration(ctx, st, nil)
	conf := func() (raft.Configuration, error) {
		f := st.Raft().GetConfiguration()
		return f.Configuration(), f.Error()
	}
	m2 := trust.Identity{NodeID: "solo", ClusterID: "c", Role: trust.RoleManager, Serial: "01"}
	if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error { return tx.Create(managerNode("solo")) }); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		check func(trust.Identity) (trust.Role, error)
	}{{"full", trust.ConnectionCheck(nodesOf(st))}, {"cached", transport.CachedCheck(trust.ConnectionCheck(nodesOf(st)), gen)}} {
		b.Run(c.name, func(b *testing.B) {
			admit := transport.RaftAdmission(conf, c.check)
			for b.Loop() {
				if err := admit(m2); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestCachedAdminsCutTheNextCall: the admin certificates' index is built
// once and reused while no node or cluster object changes (other writes
// do not count), and a revocation, a re-listing and a removal from the
// list are each seen by the very next check after the write returns —
// over 200 revocations back to back, so no hand-off can hide one. When
// the generation's subscription ends, every check looks the list up.
func TestCachedAdminsCutTheNextCall(t *testing.T) {
	st := openStore(t)
	admin := trust.Identity{NodeID: "admin", ClusterID: "c", Role: trust.RoleAdmin, Serial: "a1"}
	write(t, st, func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "c"},
			AdminCerts: []*shoalv1.AdminCertificate{{Name: "other", Serial: "o1"}, {Name: "admin", Serial: "a1"}}})
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gen := transport.WatchStoreGeneration(ctx, st, nil)
	lookups := 0
	admins := transport.CachedAdmins(func() ([]*shoalv1.AdminCertificate, bool) {
		lookups++
		c, ok := raftstore.ClusterOf(st.View())
		return c.GetAdminCerts(), ok
	}, gen)
	check := trust.StoreCheckIndexed(nodesOf(st), admins)
	_, _ = check(admin)
	poll(t, "a reused index", func() bool {
		before := lookups
		_, _ = check(admin)
		return lookups == before
	})
	before := lookups
	for range 100 {
		if role, err := check(admin); err != nil || role != trust.RoleAdmin {
			t.Fatalf("listed admin: %s, %v", role, err)
		}
	}
	write(t, st, func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Service{Meta: &shoalv1.Meta{Id: "s"}, Spec: &shoalv1.ServiceSpec{Name: "s"}})
	})
	if _, err := check(admin); err != nil || lookups != before {
		t.Fatalf("after a service write: err %v, %d lookups (want %d: the index reused)", err, lookups, before)
	}
	setAdmin := func(fn func(a *shoalv1.AdminCertificate) *shoalv1.AdminCertificate) {
		write(t, st, func(tx raftstore.WriteTx) error {
			c, _ := raftstore.ClusterOf(tx)
			c = proto.Clone(c).(*shoalv1.Cluster)
			var kept []*shoalv1.AdminCertificate
			for _, a := range c.AdminCerts {
				if a.Serial == "a1" {
					a = fn(a)
				}
				if a != nil {
					kept = append(kept, a)
				}
			}
			c.AdminCerts = kept
			return tx.Update(c)
		})
	}
	for i := range 200 {
		setAdmin(func(a *shoalv1.AdminCertificate) *shoalv1.AdminCertificate { a.Revoked = true; return a })
		if _, err := check(admin); !errors.Is(err, trust.ErrNotCurrent) {
			t.Fatalf("round %d: a revoked admin certificate: %v, want ErrNotCurrent", i, err)
		}
		setAdmin(func(a *shoalv1.AdminCertificate) *shoalv1.AdminCertificate { a.Revoked = false; return a })
		if _, err := check(admin); err != nil {
			t.Fatalf("round %d: listed again, refused: %v", i, err)
		}
	}
	setAdmin(func(*shoalv1.AdminCertificate) *shoalv1.AdminCertificate { return nil })
	if _, err := check(admin); !errors.Is(err, trust.ErrNotCurrent) {
		t.Fatalf("an admin certificate no longer listed: %v, want ErrNotCurrent", err)
	}
	// Without the subscription, every check looks the list up.
	cancel()
	poll(t, "lookups once the generation stops", func() bool {
		before := lookups
		_, _ = check(admin)
		_, _ = check(admin)
		return lookups == before+2
	})
}

// BenchmarkAdminCheck: an admin's certificate check on each API call,
// from the store (a view, the cluster table listed, the list scanned) and
// through the cached index, with 16 admin certificates listed.
func BenchmarkAdminCheck(b *testing.B) {
	t := &testing.T{}
	st := openStore(t)
	defer st.Close()
	c := &shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "c"}}
	for i := range 16 {
		c.AdminCerts = append(c.AdminCerts, &shoalv1.AdminCertificate{Name: "admin", Serial: fmt.Sprintf("%02x", i)})
	}
	if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error { return tx.Create(c) }); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gen := transport.WatchStoreGeneration(ctx, st, nil)
	lookup := func() ([]*shoalv1.AdminCertificate, bool) {
		c, ok := raftstore.ClusterOf(st.View())
		return c.GetAdminCerts(), ok
	}
	admin := trust.Identity{NodeID: "admin", ClusterID: "c", Role: trust.RoleAdmin, Serial: "0f"}
	for _, c := range []struct {
		name  string
		check func(trust.Identity) (trust.Role, error)
	}{{"store", trust.StoreCheck(nodesOf(st), lookup)}, {"cached", trust.StoreCheckIndexed(nodesOf(st), transport.CachedAdmins(lookup, gen))}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.check(admin); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// TestCachedAdmissionAfterRestore: a snapshot restore replaces the store
// without events (raftstore ends every subscription, ErrRestored). A
// verdict cached before it is not reused after it: the restored state
// (here: the manager demoted) refuses the very next check after Restore
// returns, and verdicts are reused again once the generation resubscribed.
func TestCachedAdmissionAfterRestore(t *testing.T) {
	st := openStore(t)
	demoted := managerNode("m2")
	demoted.Spec.DesiredRole = shoalv1.NodeRole_NODE_ROLE_WORKER
	write(t, st, func(tx raftstore.WriteTx) error {
		if err := tx.Create(&shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "c"}}); err != nil {
			return err
		}
		return tx.Create(demoted)
	})
	snap := st.Raft().Snapshot()
	if err := snap.Error(); err != nil {
		t.Fatal(err)
	}
	meta, rc, err := snap.Open()
	if err != nil {
		t.Fatal(err)
	}
	image, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	write(t, st, func(tx raftstore.WriteTx) error {
		n, _ := raftstore.Get[*shoalv1.Node](tx, "m2")
		n = proto.Clone(n).(*shoalv1.Node)
		n.Spec.DesiredRole = shoalv1.NodeRole_NODE_ROLE_MANAGER
		return tx.Update(n)
	})
	admit, m2, full, _ := cachedRaftAdmission(t, st)
	poll(t, "a reused admission", func() bool {
		if admit(m2) != nil {
			return false
		}
		before := *full
		return admit(m2) == nil && *full == before
	})
	if err := st.Raft().Restore(meta, bytes.NewReader(image), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := admit(m2); err == nil {
		t.Fatal("a manager demoted in the restored state was admitted by a verdict cached before the restore")
	}
	poll(t, "verdicts reused after the restore", func() bool {
		if admit(m2) == nil {
			t.Fatal("admitted after the restore")
		}
		before := *full
		return admit(m2) != nil && *full == before
	})
}

// cachedRaftAdmission is the raft admission of a store's managers with the
// cached connection check over st's generation: admit, the identity of
// manager m2 (voter beside solo), the count of full checks made, and what
// stops the generation (also at the test's end).
func cachedRaftAdmission(t *testing.T, st *raftstore.Store) (func(trust.Identity) error, trust.Identity, *int, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	gen := transport.WatchStoreGeneration(ctx, st, nil)
	full := new(int)
	check := transport.CachedCheck(func(id trust.Identity) (trust.Role, error) {
		*full++
		return trust.ConnectionCheck(nodesOf(st))(id)
	}, gen)
	conf := func() (raft.Configuration, error) {
		return raft.Configuration{Servers: []raft.Server{{ID: "solo", Suffrage: raft.Voter}, {ID: "m2", Suffrage: raft.Voter}}}, nil
	}
	m2 := trust.Identity{NodeID: "m2", ClusterID: "c", Role: trust.RoleManager, Serial: "01"}
	return transport.RaftAdmission(conf, check), m2, full, cancel
}
