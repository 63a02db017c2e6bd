package trust

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/grpc"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Policy says which roles may call which gRPC methods. A key is a full
// method ("/shoal.v1.NodeCA/GetRootCA") or a service prefix ending in "/"
// ("/shoal.v1.Control/"); an exact method wins over a prefix, a longer prefix
// over a shorter one. A nil or empty role list means the method needs no
// certificate at all. Methods matching no key are denied, so a new service
// is closed until someone decides who may call it.
type Policy map[string][]Role

// Lookup returns the roles allowed to call fullMethod and whether any key
// matched.
//
// The keys that can match are fullMethod itself and its prefixes ending in
// "/": those are looked up, longest first, instead of walking the whole
// map on every call.
func (p Policy) Lookup(fullMethod string) (roles []Role, ok bool) {
	if r, ok := p[fullMethod]; ok {
		return r, true
	}
	for i := len(fullMethod) - 1; i >= 0; i-- {
		if fullMethod[i] != '/' {
			continue
		}
		if r, ok := p[fullMethod[:i+1]]; ok {
			return r, true
		}
	}
	return nil, false
}

// DefaultPolicy is the policy of a manager's gRPC server:
//
//   - Control: managers (forwarded calls) and admins (the CLI);
//   - Dispatcher: nodes, workers and managers alike (every node runs an agent);
//   - NodeCA GetRootCA and IssueNodeCertificate: anyone, the joiner has no
//     certificate yet and the join token is checked by the handler;
//   - NodeCA RenewNodeCertificate: open, the handler decides: a node with
//     its current certificate, or one whose certificate expired with proof
//     of the old key (it cannot present an expired certificate in TLS);
//   - Control GetNode and ListAdminCertificates: also workers, whose agent
//     APIs ask a manager whether a caller's certificate is still current;
//   - RaftMembership: managers;
//   - Logs: admins (the CLI) and managers;
//   - Ops (task exec and stats): admins (the CLI) and managers.
func DefaultPolicy() Policy {
	svc := func(name string) string { return "/" + name + "/" }
	return Policy{
		svc(shoalv1.Control_ServiceDesc.ServiceName):         {RoleManager, RoleAdmin},
		svc(shoalv1.Dispatcher_ServiceDesc.ServiceName):      {RoleWorker, RoleManager},
		shoalv1.NodeCA_GetRootCA_FullMethodName:              nil,
		shoalv1.NodeCA_IssueNodeCertificate_FullMethodName:   nil,
		shoalv1.NodeCA_RenewNodeCertificate_FullMethodName:   nil,
		shoalv1.Control_GetNode_FullMethodName:               {RoleWorker, RoleManager, RoleAdmin},
		shoalv1.Control_ListAdminCertificates_FullMethodName: {RoleWorker, RoleManager, RoleAdmin},
		svc(shoalv1.RaftMembership_ServiceDesc.ServiceName):  {RoleManager},
		svc(shoalv1.Logs_ServiceDesc.ServiceName):            {RoleManager, RoleAdmin},
		svc(shoalv1.Ops_ServiceDesc.ServiceName):             {RoleManager, RoleAdmin},
		// The pipeline carries Control's unary calls, each checked on its
		// own as a unary call is (manager/pipeline).
		svc(shoalv1.Pipeline_ServiceDesc.ServiceName): {RoleManager, RoleAdmin},
	}
}

// AgentPolicy is the policy of a node's agent API server (its own
// listener, not the manager port):
//
//   - TaskLogs: managers only; operators get logs through a manager's Logs
//     service, which knows where the tasks are;
//   - LoadImage, ListImages, RemoveImage: admins (the CLI) and managers.
//
// Workers may call nothing: a compromised worker must not read other
// nodes' logs or change their images.
func AgentPolicy() Policy {
	return Policy{
		shoalv1.AgentAPI_TaskLogs_FullMethodName:    {RoleManager},
		shoalv1.AgentAPI_LoadImage_FullMethodName:   {RoleAdmin, RoleManager},
		shoalv1.AgentAPI_ListImages_FullMethodName:  {RoleAdmin, RoleManager},
		shoalv1.AgentAPI_RemoveImage_FullMethodName: {RoleAdmin, RoleManager},
		// Exec and Stats: managers only, relaying Ops calls they checked.
		shoalv1.AgentAPI_Exec_FullMethodName:  {RoleManager},
		shoalv1.AgentAPI_Stats_FullMethodName: {RoleManager},
	}
}

// Authorizer checks every RPC against a Policy using the caller's verified
// certificate and what the cluster's store says of it, and hands the
// caller's Identity to handlers (IdentityFrom).
type Authorizer struct {
	Policy Policy
	// Current says whether the certificate id is still honoured and as
	// which role its holder may act now (CurrentNodeRole, CheckAdmin):
	// errors wrapping ErrNodeRemoved and ErrNotCurrent refuse the call for
	// good, ErrNodeUnknown (and any other error: the store cannot be asked)
	// refuse it as retryable. Nil trusts the certificate alone (tests and
	// tools only).
	Current func(ctx context.Context, id Identity) (Role, error)
	// ClusterID, when set, refuses certificates of any other cluster. The
	// TLS handshake already pins the CA; this guards against a CA that is
	// (mistakenly) shared between clusters.
	ClusterID string
	// Recheck, when positive, asks again every Recheck about the caller
	// of a stream in progress (a watch, a followed log), and ends the
	// stream with PERMISSION_DENIED once it is refused: a stream outlives
	// the check made when it opened.
	Recheck time.Duration
	// Ongoing, when set, is what Recheck asks instead of Current: a check
	// that does not hold renewals against a stream opened with the
	// certificate they replaced (CurrentNodeRoleOfConnection), while a
	// demotion, removal or revocation still ends it.
	Ongoing func(ctx context.Context, id Identity) (Role, error)
	// OngoingView, when set, is what Recheck asks instead of Ongoing: once
	// a period it returns a check bound to one read of the store, which the
	// one recheck goroutine applies to every stream open. With 5,000 node
	// sessions on a manager that is one store read a second instead of
	// 5,000 (each a memdb transaction, and a goroutine with a ticker per
	// stream), while a demotion, removal or revocation still ends a stream
	// within a period.
	OngoingView func() func(Identity) (Role, error)
	// Tokens verifies an API bearer token (VerifyAPIToken against the
	// store) on every call and stream recheck: a revoked or expired token
	// is refused from the next call on. Nil refuses every token.
	Tokens func(ctx context.Context, token string) (Identity, error)
	// TokenPolicy is the least token role of each method for callers with
	// a token; nil means TokenPolicy().
	TokenPolicy map[string]TokenRole
	// MaxTokenStreams, when positive, bounds the streams (watches, logs,
	// stats, execs) one API token holds open on this server at once: each
	// costs goroutines and a recheck, and a leaked viewer token must not
	// exhaust a manager. Beyond it a stream is refused RESOURCE_EXHAUSTED.
	MaxTokenStreams int

	streamsMu    sync.Mutex
	tokenStreams map[string]int // open streams by token id

	rechecks rechecker // certificate streams asked about every Recheck
}

// holdTokenStream counts a stream of token id open, or refuses it at
// MaxTokenStreams; release undoes it.
func (a *Authorizer) holdTokenStream(id Identity) (release func(), err error) {
	if a.MaxTokenStreams <= 0 {
		return func() {}, nil
	}
	a.streamsMu.Lock()
	defer a.streamsMu.Unlock()
	if a.tokenStreams[id.Serial] >= a.MaxTokenStreams {
		return nil, errdefs.ResourceExhaustedf("API token %q (%s) already holds %d streams open on this manager, the most it may; close some", id.Serial, id.NodeID, a.MaxTokenStreams)
	}
	if a.tokenStreams == nil {
		a.tokenStreams = map[string]int{}
	}
	a.tokenStreams[id.Serial]++
	return func() {
		a.streamsMu.Lock()
		defer a.streamsMu.Unlock()
		if a.tokenStreams[id.Serial]--; a.tokenStreams[id.Serial] <= 0 {
			delete(a.tokenStreams, id.Serial)
		}
	}, nil
}

// Unary returns the interceptor for unary calls.
func (a *Authorizer) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := a.authorize(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// Stream returns the interceptor for streaming calls.
func (a *Authorizer) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := a.authorize(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		id, named := IdentityFrom(ctx)
		tok, hasToken := bearerToken(ctx)
		if hasToken && TokenRoleOf(id) != 0 {
			release, err := a.holdTokenStream(id)
			if err != nil {
				return err
			}
			defer release()
		}
		if hasToken && a.Recheck > 0 && TokenRoleOf(id) != 0 {
			ctx, cancel := context.WithCancelCause(ctx)
			defer cancel(nil)
			go a.recheckToken(ctx, tok, info.FullMethod, cancel)
			err = handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
			if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
				return cause
			}
			return err
		}
		if a.Recheck <= 0 || a.Current == nil || !named {
			return handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
		}
		certID, err := PeerIdentity(ctx)
		if err != nil {
			return handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
		}
		ctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		roles, _ := a.Policy.Lookup(info.FullMethod)
		defer a.rechecks.add(a, &recheckStream{ctx: ctx, cancel: cancel, id: id, certID: certID, roles: roles, method: info.FullMethod})()
		err = handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			return cause
		}
		return err
	}
}

// recheckToken cancels a stream's context once its token is refused
// (revoked, expired, removed).
func (a *Authorizer) recheckToken(ctx context.Context, tok, method string, cancel context.CancelCauseFunc) {
	t := time.NewTicker(a.Recheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := a.authorizeToken(ctx, method, tok); err != nil && !errdefs.IsUnavailable(err) {
			cancel(err)
			return
		}
	}
}

// authorizeToken decides a call made with an API bearer token: the token
// must verify now and its role reach the method's row in TokenPolicy.
func (a *Authorizer) authorizeToken(ctx context.Context, method, tok string) (context.Context, error) {
	if a.Tokens == nil {
		return nil, errdefs.Unauthenticatedf("API tokens are not accepted here: use a client certificate")
	}
	pol := a.TokenPolicy
	if pol == nil {
		pol = TokenPolicy()
	}
	need, ok := pol[method]
	if !ok {
		return nil, errdefs.PermissionDeniedf("%s cannot be called with an API token", method)
	}
	id, err := a.Tokens(ctx, tok)
	if err != nil {
		return nil, err
	}
	if a.ClusterID != "" && id.ClusterID != a.ClusterID {
		return nil, errdefs.Unauthenticatedf("API token %q belongs to another cluster", id.Serial)
	}
	if have := TokenRoleOf(id); have < need {
		return nil, errdefs.PermissionDeniedf("API token %q (%s, role %s) may not call %s (needs role %s)", id.NodeID, id.Serial, have, method, need)
	}
	return WithIdentity(ctx, id), nil
}

// identityStream lets stream handlers see the identity in their context.
type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }

// ErrNodeRemoved is what the store checks return (wrapped) for a node
// removed from the cluster: errdefs' protocol state, so a refusal made
// from it reaches the node as a detail (errdefs.IsNodeRemoved) and the
// agent stops instead of retrying for ever.
var ErrNodeRemoved = errdefs.ErrNodeRemoved

// RemovedReason is in the message a removed node's calls are refused with,
// for the operator; the agent reads the detail, not the text.
const RemovedReason = "has been removed from the cluster"

// authorize decides one call and returns the context for its handler.
func (a *Authorizer) authorize(ctx context.Context, method string) (context.Context, error) {
	if tok, ok := bearerToken(ctx); ok {
		return a.authorizeToken(ctx, method, tok)
	}
	roles, ok := a.Policy.Lookup(method)
	if !ok {
		return nil, errdefs.PermissionDeniedf("%s is not allowed by the authorization policy", method)
	}
	id, idErr := PeerIdentity(ctx)
	if len(roles) == 0 {
		// An open method: a caller who does present a valid certificate is
		// still named to the handler, the others pass anonymously.
		if idErr == nil {
			if cur, err := a.checkIdentity(ctx, id); err == nil {
				ctx = WithIdentity(ctx, cur)
			}
		}
		return ctx, nil
	}
	if idErr != nil {
		return nil, errdefs.Unauthenticatedf("a client certificate issued by the cluster CA (or an API bearer token) is required for %s", method)
	}
	if a.ClusterID != "" && id.ClusterID != a.ClusterID {
		return nil, errdefs.Unauthenticatedf("the certificate of %s belongs to cluster %q, not to this cluster %q", id, id.ClusterID, a.ClusterID)
	}
	// A removed node is told so whatever it calls (checked before the
	// role, so the message names the real reason).
	certRole := id.Role
	id, err := a.current(ctx, id)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(roles, id.Role) {
		if certRole != id.Role {
			return nil, errdefs.PermissionDeniedf("node %q's role is changing: its %s certificate acts as a %s until it renews, and role %s may not call %s (needs %s)",
				id.NodeID, certRole, id.Role, id.Role, method, joinRoles(roles))
		}
		return nil, errdefs.PermissionDeniedf("role %s may not call %s (needs %s)", id.Role, method, joinRoles(roles))
	}
	return WithIdentity(ctx, id), nil
}

// current applies Current and returns the identity with the role its holder
// may act as now, or the refusal (errdefs classes).
func (a *Authorizer) current(ctx context.Context, id Identity) (Identity, error) {
	if a.Current == nil {
		return id, nil
	}
	return currentBy(id, func(id Identity) (Role, error) { return a.Current(ctx, id) })
}

// currentBy applies the store check check to id: the identity with the
// role its holder may act as now, or the refusal (errdefs classes).
func currentBy(id Identity, check func(Identity) (Role, error)) (Identity, error) {
	role, err := check(id)
	switch {
	case err == nil:
		id.Role = role
		return id, nil
	case errors.Is(err, ErrNodeRemoved):
		return Identity{}, errdefs.NodeRemovedf("node %q %s; its certificate is no longer accepted", id.NodeID, RemovedReason)
	case errors.Is(err, ErrNotCurrent):
		return Identity{}, errdefs.PermissionDeniedf("%v", err)
	case errors.Is(err, errBootstrapping):
		// No cluster object at all: the manager is starting (no raft
		// leader yet, or not caught up with one). Marked, so that a client
		// stops waiting for it soon and says why (errdefs.ErrNotReady).
		return Identity{}, errdefs.NotReadyf("manager not ready: it has not applied the cluster state yet (its raft has no leader, or has not caught up with the leader: a restarted manager applies its log only once a leader is elected), so it cannot check %s", id)
	}
	// Not known yet (a lagging manager, a bootstrap not yet committed) or
	// the store could not be asked: worth retrying elsewhere or later.
	return Identity{}, errdefs.Unavailablef("%s is not known to this server yet: %v", id, err)
}

// checkIdentity applies the cluster and store checks without a policy.
func (a *Authorizer) checkIdentity(ctx context.Context, id Identity) (Identity, error) {
	if a.ClusterID != "" && id.ClusterID != a.ClusterID {
		return Identity{}, errdefs.Unauthenticatedf("certificate of another cluster")
	}
	return a.current(ctx, id)
}

// joinRoles renders "manager", "manager or admin", "worker, manager or admin".
func joinRoles(roles []Role) string {
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	if len(s) <= 1 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}
