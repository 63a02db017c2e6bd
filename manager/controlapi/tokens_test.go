package controlapi

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

// storeTokens is what every manager verifies bearer tokens against.
func storeTokens(t *testing.T, st *raftstore.Store) []*shoalv1.ApiToken {
	t.Helper()
	c, ok := raftstore.ClusterOf(st.View())
	if !ok {
		t.Fatal("no cluster")
	}
	return c.GetApiTokens()
}

// TestAPITokens: create checks name, role and ttl (field paths), stores
// the hash only and returns the token once; the token verifies until it is
// revoked (by name or id) or expires; names are unique; list hides hashes.
func TestAPITokens(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		req  *shoalv1.CreateTokenRequest
		msg  string
	}{
		{"bad name", &shoalv1.CreateTokenRequest{Name: "../x", Role: "viewer"}, "name:"},
		{"no role", &shoalv1.CreateTokenRequest{Name: "dash"}, "role:"},
		{"bad role", &shoalv1.CreateTokenRequest{Name: "dash", Role: "root"}, "role:"},
		{"ttl too short", &shoalv1.CreateTokenRequest{Name: "dash", Role: "viewer", TtlMs: 5}, "ttl_ms:"},
		{"negative ttl", &shoalv1.CreateTokenRequest{Name: "dash", Role: "viewer", TtlMs: -60000}, "ttl_ms:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.CreateToken(ctx, tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.msg)
		})
	}
	resp, err := s.CreateToken(ctx, &shoalv1.CreateTokenRequest{Name: "dash", Role: "viewer"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetInfo().GetSecretHash()) != 0 || resp.GetInfo().GetExpiresAt() != nil {
		t.Fatalf("create replied %+v", resp.GetInfo())
	}
	stored := storeTokens(t, st)
	if len(stored) != 1 || len(stored[0].GetSecretHash()) != 32 {
		t.Fatalf("stored %+v", stored)
	}
	if id, err := trust.VerifyAPIToken(stored, "c1", resp.GetToken(), time.Now()); err != nil || trust.TokenRoleOf(id) != trust.TokenViewer {
		t.Fatalf("verify: %+v %v", id, err)
	}
	_, err = s.CreateToken(ctx, &shoalv1.CreateTokenRequest{Name: "dash", Role: "admin"})
	wantCode(t, err, codes.AlreadyExists, "dash")

	short, err := s.CreateToken(ctx, &shoalv1.CreateTokenRequest{Name: "short", Role: "operator", TtlMs: time.Minute.Milliseconds()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trust.VerifyAPIToken(storeTokens(t, st), "c1", short.GetToken(), time.Now().Add(2*time.Minute)); err == nil {
		t.Fatal("a token past its ttl verified")
	}

	list, err := s.ListTokens(ctx, &shoalv1.ListTokensRequest{})
	if err != nil || len(list.GetTokens()) != 2 {
		t.Fatalf("list: %v %v", list, err)
	}
	for _, tok := range list.GetTokens() {
		if len(tok.GetSecretHash()) != 0 {
			t.Fatalf("list shows the hash of %q", tok.GetName())
		}
	}
	gc, err := s.GetCluster(ctx, &shoalv1.GetClusterRequest{})
	if err != nil || len(gc.GetCluster().GetApiTokens()) != 2 || len(gc.GetCluster().GetApiTokens()[0].GetSecretHash()) != 0 {
		t.Fatalf("GetCluster shows token hashes: %v %v", gc, err)
	}

	if _, err := s.RevokeToken(ctx, &shoalv1.RevokeTokenRequest{Ref: "dash"}); err != nil {
		t.Fatal(err)
	}
	if _, err := trust.VerifyAPIToken(storeTokens(t, st), "c1", resp.GetToken(), time.Now()); err == nil {
		t.Fatal("a revoked token verified")
	}
	_, err = s.RevokeToken(ctx, &shoalv1.RevokeTokenRequest{Ref: resp.GetInfo().GetId()})
	wantCode(t, err, codes.FailedPrecondition, "already revoked")
	if _, err := s.RevokeToken(ctx, &shoalv1.RevokeTokenRequest{Ref: short.GetInfo().GetId()}); err != nil {
		t.Fatalf("revoke by id: %v", err)
	}
	_, err = s.RevokeToken(ctx, &shoalv1.RevokeTokenRequest{Ref: "nope"})
	wantCode(t, err, codes.NotFound, "nope")
	_, err = s.RevokeToken(ctx, &shoalv1.RevokeTokenRequest{})
	wantCode(t, err, codes.InvalidArgument, "ref:")
}

// TestKeptTokens: at the bound, dead tokens make room (live ones never);
// with none dead, create is refused.
func TestKeptTokens(t *testing.T) {
	now := time.Now()
	full := make([]*shoalv1.ApiToken, MaxAPITokens)
	for i := range full {
		full[i] = &shoalv1.ApiToken{Id: fmt.Sprint(i), Name: fmt.Sprintf("t%d", i)}
	}
	if _, err := keptTokens(full, "new", now); err == nil {
		t.Fatal("created beyond the bound")
	}
	withDead := append([]*shoalv1.ApiToken(nil), full...)
	withDead[7] = proto.Clone(withDead[7]).(*shoalv1.ApiToken)
	withDead[7].Revoked = true
	keep, err := keptTokens(withDead, "new", now)
	if err != nil || len(keep) != MaxAPITokens-1 {
		t.Fatalf("kept %d, %v", len(keep), err)
	}
	for _, k := range keep {
		if k.GetRevoked() {
			t.Fatal("kept the revoked token")
		}
	}
	if withDead[7].GetName() != "t7" {
		t.Fatal("keptTokens changed its input")
	}
}

// tokenCtx is a context as a handler sees a call made with a token.
func tokenCtx(role trust.TokenRole) context.Context {
	roles := map[trust.TokenRole]trust.Role{trust.TokenViewer: trust.RoleViewerToken, trust.TokenOperator: trust.RoleOperatorToken, trust.TokenAdmin: trust.RoleAdminToken}
	return trust.WithIdentity(context.Background(), trust.Identity{NodeID: "tok", Role: roles[role], ClusterID: "c1", Serial: "abc"})
}

// TestTokenRolesInHandlers: tokens below admin see no join tokens and may
// not change a node's role (their rows allow the rest of these calls).
func TestTokenRolesInHandlers(t *testing.T) {
	s, st := newServer(t)
	if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error {
		c, _ := raftstore.ClusterOf(tx)
		c = proto.Clone(c).(*shoalv1.Cluster)
		c.Tokens = &shoalv1.JoinTokens{Worker: "SHOAL-1-w", Manager: "SHOAL-1-m"}
		return tx.Update(c)
	}); err != nil {
		t.Fatal(err)
	}
	addNode(t, st, "w1", shoalv1.NodeRole_NODE_ROLE_WORKER, shoalv1.NodeState_NODE_STATE_READY)
	for _, tc := range []struct {
		role      trust.TokenRole
		joinShown bool
	}{{trust.TokenViewer, false}, {trust.TokenOperator, false}, {trust.TokenAdmin, true}} {
		resp, err := s.GetCluster(tokenCtx(tc.role), &shoalv1.GetClusterRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if shown := resp.GetCluster().GetTokens().GetManager() != ""; shown != tc.joinShown {
			t.Errorf("%s token: join tokens shown %v, want %v", tc.role, shown, tc.joinShown)
		}
	}
	get := func() *shoalv1.Node {
		n, _ := raftstore.Get[*shoalv1.Node](st.View(), "w1")
		return n
	}
	n := get()
	spec := proto.Clone(n.GetSpec()).(*shoalv1.NodeSpec)
	spec.DesiredRole = shoalv1.NodeRole_NODE_ROLE_MANAGER
	_, err := s.UpdateNode(tokenCtx(trust.TokenOperator), &shoalv1.UpdateNodeRequest{NodeId: "w1", Version: n.GetMeta().GetVersion(), Spec: spec})
	wantCode(t, err, codes.PermissionDenied, "spec.desired_role")
	spec = proto.Clone(n.GetSpec()).(*shoalv1.NodeSpec)
	spec.Availability = shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN
	if _, err := s.UpdateNode(tokenCtx(trust.TokenOperator), &shoalv1.UpdateNodeRequest{NodeId: "w1", Version: n.GetMeta().GetVersion(), Spec: spec}); err != nil {
		t.Fatalf("operator drain: %v", err)
	}
}

// watchStream is a Control_WatchServer that hands events to a channel.
type watchStream struct {
	shoalv1.Control_WatchServer
	ctx context.Context
	ev  chan *shoalv1.WatchEvent
	hdr chan struct{}
}

func (w *watchStream) Context() context.Context { return w.ctx }

// SendHeader records the headers being sent, on hdr if set.
func (w *watchStream) SendHeader(metadata.MD) error {
	if w.hdr != nil {
		w.hdr <- struct{}{}
	}
	return nil
}
func (w *watchStream) Send(ev *shoalv1.WatchEvent) error {
	select {
	case w.ev <- ev:
		return nil
	case <-w.ctx.Done():
		return w.ctx.Err()
	}
}

// TestWatchSendsHeadersAtOnce: an accepted watch sends its headers before
// any event (a quiet stream is open for its caller at once); a refused one
// sends none, so its error keeps its status.
func TestWatchSendsHeadersAtOnce(t *testing.T) {
	s, st := newServer(t)
	ctx, cancel := context.WithCancel(tokenCtx(trust.TokenViewer))
	ws := &watchStream{ctx: ctx, ev: make(chan *shoalv1.WatchEvent, 1), hdr: make(chan struct{}, 1)}
	done := make(chan error, 1)
	go func() { done <- s.Watch(&shoalv1.WatchRequest{FromIndex: st.View().Index() + 1}, ws) }()
	select {
	case <-ws.hdr:
	case ev := <-ws.ev:
		t.Fatalf("an event before the headers: %v", ev)
	case err := <-done:
		t.Fatalf("watch ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no headers from a quiet watch")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("watch ended with %v", err)
	}
	bad := &watchStream{ctx: context.Background(), hdr: make(chan struct{}, 1)}
	err := s.Watch(&shoalv1.WatchRequest{Kinds: []string{"bogus"}}, bad)
	wantCode(t, err, codes.InvalidArgument, "kinds")
	if len(bad.hdr) != 0 {
		t.Error("a refused watch sent headers")
	}
}

// TestWatchClusterRedacted: a cluster event of Watch (a viewer token's
// right) carries no API token hashes, and, below admin, no join tokens —
// as GetCluster.
func TestWatchClusterRedacted(t *testing.T) {
	s, st := newServer(t)
	if _, err := s.CreateToken(context.Background(), &shoalv1.CreateTokenRequest{Name: "dash", Role: "viewer"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		role      trust.TokenRole
		joinShown bool
	}{{trust.TokenViewer, false}, {trust.TokenOperator, false}, {trust.TokenAdmin, true}} {
		t.Run(tc.role.String(), func(t *testing.T) {
			ctx, cancel := context.WithCancel(tokenCtx(tc.role))
			ws := &watchStream{ctx: ctx, ev: make(chan *shoalv1.WatchEvent)}
			done := make(chan error, 1)
			from := st.View().Index() + 1
			go func() {
				done <- s.Watch(&shoalv1.WatchRequest{FromIndex: from, Kinds: []string{string(raftstore.KindCluster)}}, ws)
			}()
			defer func() { cancel(); <-done }()
			if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error {
				c, _ := raftstore.ClusterOf(tx)
				c = proto.Clone(c).(*shoalv1.Cluster)
				c.Tokens = &shoalv1.JoinTokens{Worker: "SHOAL-1-w-" + tc.role.String(), Manager: "SHOAL-1-m"}
				return tx.Update(c)
			}); err != nil {
				t.Fatal(err)
			}
			var c *shoalv1.Cluster
			for c == nil {
				select {
				case ev := <-ws.ev:
					c = ev.GetObject().GetCluster()
				case err := <-done:
					t.Fatalf("watch ended: %v", err)
				}
			}
			if len(c.GetApiTokens()) != 1 || len(c.GetApiTokens()[0].GetSecretHash()) != 0 {
				t.Errorf("watch event shows token hashes: %v", c.GetApiTokens())
			}
			if shown := c.GetTokens().GetManager() != ""; shown != tc.joinShown {
				t.Errorf("%s token: join tokens shown %v, want %v", tc.role, shown, tc.joinShown)
			}
			if len(c.GetCaKeyPem()) != 0 || len(c.GetGossipKeys()) != 0 {
				t.Error("watch event shows the CA key or gossip keys")
			}
		})
	}
}

// TestHostAccessNeedsAdminToken: an operator token may not create or
// update a service with a host bind mount or an added capability (root on
// the nodes, whose disks hold the CA key); an admin token may, and an
// operator's update may keep what an admin set.
func TestHostAccessNeedsAdminToken(t *testing.T) {
	s, _ := newServer(t)
	host := func(name string) *shoalv1.ServiceSpec {
		sp := validSpec()
		sp.Name = name
		sp.Task.Container.Mounts = []*shoalv1.Mount{{Type: "bind", Source: "/", Target: "/host"}}
		sp.Task.Container.CapAdd = []string{"CAP_SYS_ADMIN"}
		return sp
	}
	_, err := s.CreateService(tokenCtx(trust.TokenOperator), &shoalv1.CreateServiceRequest{Spec: host("op")})
	wantCode(t, err, codes.PermissionDenied, "spec.task.container.mounts[0].source")
	wantCode(t, err, codes.PermissionDenied, "spec.task.container.cap_add[0]")
	plain := validSpec()
	plain.Name = "plain"
	created, err := s.CreateService(tokenCtx(trust.TokenOperator), &shoalv1.CreateServiceRequest{Spec: plain})
	if err != nil {
		t.Fatalf("operator, no host access: %v", err)
	}
	_, err = s.UpdateService(tokenCtx(trust.TokenOperator), &shoalv1.UpdateServiceRequest{ServiceId: created.GetService().GetMeta().GetId(),
		Version: created.GetService().GetMeta().GetVersion(), Spec: host("plain")})
	wantCode(t, err, codes.PermissionDenied, "spec.task.container.mounts[0].source")

	adm, err := s.CreateService(tokenCtx(trust.TokenAdmin), &shoalv1.CreateServiceRequest{Spec: host("adm")})
	if err != nil {
		t.Fatalf("admin token: %v", err)
	}
	keep := host("adm")
	keep.Replicas = 2
	if _, err := s.UpdateService(tokenCtx(trust.TokenOperator), &shoalv1.UpdateServiceRequest{ServiceId: adm.GetService().GetMeta().GetId(),
		Version: adm.GetService().GetMeta().GetVersion(), Spec: keep}); err != nil {
		t.Fatalf("operator keeping the admin's mounts: %v", err)
	}
}

// TestRollbackHostAccessNeedsAdminToken: a rollback writes its previous
// spec as an update would, so an operator token may not bring back a bind
// mount or capability an admin removed since; an admin may, and an
// operator may roll back a change that leaves them as they are.
func TestRollbackHostAccessNeedsAdminToken(t *testing.T) {
	s, _ := newServer(t)
	spec := validSpec()
	spec.Name = "adm"
	spec.Task.Container.Mounts = []*shoalv1.Mount{{Type: "bind", Source: "/", Target: "/host"}}
	spec.Task.Container.CapAdd = []string{"CAP_SYS_ADMIN"}
	created, err := s.CreateService(tokenCtx(trust.TokenAdmin), &shoalv1.CreateServiceRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetService().GetMeta().GetId()
	// The admin takes the host access away.
	safe := proto.Clone(spec).(*shoalv1.ServiceSpec)
	safe.Task.Container.Mounts, safe.Task.Container.CapAdd = nil, nil
	upd, err := s.UpdateService(tokenCtx(trust.TokenAdmin), &shoalv1.UpdateServiceRequest{ServiceId: id, Version: created.GetService().GetMeta().GetVersion(), Spec: safe})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.RollbackService(tokenCtx(trust.TokenOperator), &shoalv1.RollbackServiceRequest{ServiceId: id})
	wantCode(t, err, codes.PermissionDenied, "spec.task.container.mounts[0].source")
	wantCode(t, err, codes.PermissionDenied, "spec.task.container.cap_add[0]")
	wantCode(t, err, codes.PermissionDenied, "rollback of adm")
	got, err := s.GetService(context.Background(), &shoalv1.GetServiceRequest{Ref: id})
	if err != nil || got.GetService().GetMeta().GetVersion() != upd.GetService().GetMeta().GetVersion() || len(got.GetService().GetSpec().GetTask().GetContainer().GetMounts()) != 0 {
		t.Fatalf("refused rollback changed the service: %v %v", got, err)
	}
	// An admin may roll back to it; then an operator may roll back to the
	// safe spec and (host access unchanged between them) scale.
	if _, err := s.RollbackService(tokenCtx(trust.TokenAdmin), &shoalv1.RollbackServiceRequest{ServiceId: id}); err != nil {
		t.Fatalf("admin rollback: %v", err)
	}
	if _, err := s.RollbackService(tokenCtx(trust.TokenOperator), &shoalv1.RollbackServiceRequest{ServiceId: id}); err != nil {
		t.Fatalf("operator rollback to the spec without host access: %v", err)
	}
}

// TestViewerReadsNoEnvValues: a viewer token reads a service's and a
// task's environment variable names but not their values — through
// GetService, ListServices, GetTask, ListTasks and Watch, in the spec and
// the previous spec — and the store's objects keep them; an operator token
// reads them.
func TestViewerReadsNoEnvValues(t *testing.T) {
	s, st := newServer(t)
	spec := validSpec()
	spec.Name = "db"
	spec.Task.Container.Env = []string{"DB_PASSWORD=hunter2", "MODE="}
	created, err := s.CreateService(tokenCtx(trust.TokenOperator), &shoalv1.CreateServiceRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	svcID := created.GetService().GetMeta().GetId()
	spec2 := proto.Clone(spec).(*shoalv1.ServiceSpec)
	spec2.Task.Container.Env = []string{"DB_PASSWORD=hunter3"}
	if _, err := s.UpdateService(tokenCtx(trust.TokenOperator), &shoalv1.UpdateServiceRequest{ServiceId: svcID, Version: created.GetService().GetMeta().GetVersion(), Spec: spec2}); err != nil {
		t.Fatal(err)
	}
	vctx, cancel := context.WithCancel(tokenCtx(trust.TokenViewer))
	defer cancel()
	ws := &watchStream{ctx: vctx, ev: make(chan *shoalv1.WatchEvent, 16), hdr: make(chan struct{}, 1)}
	done := make(chan error, 1)
	from := st.View().Index() + 1
	go func() {
		done <- s.Watch(&shoalv1.WatchRequest{FromIndex: from, Kinds: []string{string(raftstore.KindTask)}}, ws)
	}()
	defer func() { cancel(); <-done }()
	if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Task{Meta: &shoalv1.Meta{Id: "t1"}, ServiceId: svcID, ServiceName: "db", Slot: 1,
			Spec: proto.Clone(spec2.GetTask()).(*shoalv1.TaskSpec)})
	}); err != nil {
		t.Fatal(err)
	}
	var envs [][]string
	check := func(what string, env []string, want ...string) {
		t.Helper()
		if !slices.Equal(env, want) {
			t.Errorf("%s: env %q, want %q", what, env, want)
		}
		envs = append(envs, env)
	}
	red := "DB_PASSWORD=" + RedactedValue
	viewer := tokenCtx(trust.TokenViewer)
	gs, err := s.GetService(viewer, &shoalv1.GetServiceRequest{Ref: "db"})
	if err != nil {
		t.Fatal(err)
	}
	check("GetService spec", gs.GetService().GetSpec().GetTask().GetContainer().GetEnv(), red)
	check("GetService previous spec", gs.GetService().GetPreviousSpec().GetTask().GetContainer().GetEnv(), red, "MODE=")
	ls, err := s.ListServices(viewer, &shoalv1.ListServicesRequest{})
	if err != nil || len(ls.GetServices()) != 1 {
		t.Fatalf("%v %v", ls, err)
	}
	check("ListServices", ls.GetServices()[0].GetSpec().GetTask().GetContainer().GetEnv(), red)
	gt, err := s.GetTask(viewer, &shoalv1.GetTaskRequest{Ref: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	check("GetTask", gt.GetTask().GetSpec().GetContainer().GetEnv(), red)
	lt, err := s.ListTasks(viewer, &shoalv1.ListTasksRequest{})
	if err != nil || len(lt.GetTasks()) != 1 {
		t.Fatalf("%v %v", lt, err)
	}
	check("ListTasks", lt.GetTasks()[0].GetSpec().GetContainer().GetEnv(), red)
	select {
	case ev := <-ws.ev:
		check("Watch", ev.GetObject().GetTask().GetSpec().GetContainer().GetEnv(), red)
	case err := <-done:
		t.Fatalf("watch ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no task event")
	}
	for _, e := range envs {
		if strings.Contains(strings.Join(e, " "), "hunter") {
			t.Errorf("a viewer read a value: %q", e)
		}
	}
	// The operator reads the values, and the store still holds them.
	op, err := s.GetService(tokenCtx(trust.TokenOperator), &shoalv1.GetServiceRequest{Ref: "db"})
	if err != nil {
		t.Fatal(err)
	}
	check("operator GetService", op.GetService().GetSpec().GetTask().GetContainer().GetEnv(), "DB_PASSWORD=hunter3")
	opt, err := s.GetTask(tokenCtx(trust.TokenOperator), &shoalv1.GetTaskRequest{Ref: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	check("operator GetTask", opt.GetTask().GetSpec().GetContainer().GetEnv(), "DB_PASSWORD=hunter3")
}
