package ca

import (
	"context"
	"errors"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
func (p Policy) Lookup(fullMethod string) (roles []Role, ok bool) {
	if r, ok := p[fullMethod]; ok {
		return r, true
	}
	best := -1
	for k, r := range p {
		if strings.HasSuffix(k, "/") && strings.HasPrefix(fullMethod, k) && len(k) > best {
			roles, best = r, len(k)
		}
	}
	return roles, best >= 0
}

// DefaultPolicy is the policy of a manager's gRPC server:
//
//   - Control: managers (forwarded calls) and admins (the CLI);
//   - Dispatcher: nodes, workers and managers alike (every node runs an agent);
//   - NodeCA GetRootCA and IssueNodeCertificate: anyone, the joiner has no
//     certificate yet and the join token is checked by the handler;
//   - NodeCA RenewNodeCertificate: nodes;
//   - RaftMembership: managers;
//   - Logs: admins (the CLI) and managers.
func DefaultPolicy() Policy {
	svc := func(name string) string { return "/" + name + "/" }
	return Policy{
		svc(shoalv1.Control_ServiceDesc.ServiceName):        {RoleManager, RoleAdmin},
		svc(shoalv1.Dispatcher_ServiceDesc.ServiceName):     {RoleWorker, RoleManager},
		shoalv1.NodeCA_GetRootCA_FullMethodName:             nil,
		shoalv1.NodeCA_IssueNodeCertificate_FullMethodName:  nil,
		shoalv1.NodeCA_RenewNodeCertificate_FullMethodName:  {RoleWorker, RoleManager},
		svc(shoalv1.RaftMembership_ServiceDesc.ServiceName): {RoleManager},
		svc(shoalv1.Logs_ServiceDesc.ServiceName):           {RoleManager, RoleAdmin},
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
	}
}

// Authorizer checks every RPC against a Policy using the caller's verified
// certificate, and hands the caller's Identity to handlers (IdentityFrom).
type Authorizer struct {
	Policy Policy
	// NodeValid returns an error wrapping ErrNodeRemoved for removed
	// nodes, another error for nodes not known (yet), nil for valid ones;
	// it returns an error for node ids that may no longer call
	// (removed nodes). Nil means every node is valid. It is not asked about
	// admin certificates, which name no node.
	NodeValid func(nodeID string) error
	// ClusterID, when set, refuses certificates of any other cluster. The
	// TLS handshake already pins the CA; this guards against a CA that is
	// (mistakenly) shared between clusters.
	ClusterID string
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
		return handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
	}
}

// identityStream lets stream handlers see the identity in their context.
type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }

// ErrNodeRemoved is what Authorizer.NodeValid returns (wrapped) for a node
// removed from the cluster; any other error means "not known yet".
var ErrNodeRemoved = errors.New("node removed from the cluster")

// RemovedReason is in the message a removed node's calls are refused
// with; agents look for it to stop instead of retrying for ever.
const RemovedReason = "has been removed from the cluster"

// IsRemoved reports whether err is the refusal of a removed node.
func IsRemoved(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.PermissionDenied && strings.Contains(st.Message(), RemovedReason)
}

// authorize decides one call and returns the context for its handler.
func (a *Authorizer) authorize(ctx context.Context, method string) (context.Context, error) {
	roles, ok := a.Policy.Lookup(method)
	if !ok {
		return nil, status.Errorf(codes.PermissionDenied, "%s is not allowed by the authorization policy", method)
	}
	id, idErr := PeerIdentity(ctx)
	if len(roles) == 0 {
		// An open method: a caller who does present a valid certificate is
		// still named to the handler, the others pass anonymously.
		if idErr == nil && a.checkIdentity(id) == nil {
			ctx = WithIdentity(ctx, id)
		}
		return ctx, nil
	}
	if idErr != nil {
		return nil, status.Errorf(codes.Unauthenticated, "a client certificate issued by the cluster CA is required for %s", method)
	}
	if a.ClusterID != "" && id.ClusterID != a.ClusterID {
		return nil, status.Errorf(codes.Unauthenticated, "the certificate of %s belongs to cluster %q, not to this cluster %q", id, id.ClusterID, a.ClusterID)
	}
	// A removed node is told so whatever it calls (checked before the
	// role, so the message names the real reason).
	if id.Role != RoleAdmin && a.NodeValid != nil {
		if err := a.NodeValid(id.NodeID); errors.Is(err, ErrNodeRemoved) {
			return nil, status.Errorf(codes.PermissionDenied, "node %q %s; its certificate is no longer accepted", id.NodeID, RemovedReason)
		} else if err != nil {
			// Not known yet (a lagging manager, a bootstrap not yet
			// committed): worth retrying elsewhere or later.
			return nil, status.Errorf(codes.Unavailable, "node %q is not known to this manager yet: %v", id.NodeID, err)
		}
	}
	if !slices.Contains(roles, id.Role) {
		return nil, status.Errorf(codes.PermissionDenied, "role %s may not call %s (needs %s)", id.Role, method, joinRoles(roles))
	}
	return WithIdentity(ctx, id), nil
}

// checkIdentity applies the cluster and node checks without a policy.
func (a *Authorizer) checkIdentity(id Identity) error {
	if a.ClusterID != "" && id.ClusterID != a.ClusterID {
		return status.Error(codes.Unauthenticated, "certificate of another cluster")
	}
	if id.Role != RoleAdmin && a.NodeValid != nil {
		return a.NodeValid(id.NodeID)
	}
	return nil
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
