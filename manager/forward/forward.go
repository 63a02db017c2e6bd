// Package forward sends unary gRPC calls that reach a follower manager on to
// the raft leader, so that any manager serves the whole API and every read
// and write is answered by the leader (linearizable).
//
// The reply type of a forwarded call is found in the proto registry from the
// method name, so one interceptor serves every service without per-method
// code. A forwarded call carries metadata naming the original caller, which
// the leader trusts only from a peer holding a manager certificate (managers
// are trusted with the CA key anyway) that is a current manager per the
// store; anyone else sending it is refused.
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/shoal-dev/shoal/trust"
)

// forwardedWait bounds how long a manager that receives a forwarded call
// waits to become a ready leader (just elected, barrier pending).
const forwardedWait = time.Second

const (
	mdForwarded    = "shoal-forwarded"
	mdForwardedFor = "shoal-forwarded-for"
)

// Leadership is the part of the raft store the forwarder needs.
type Leadership interface {
	IsLeader() bool
	Leader() (id, addr string)
	LeadershipChanged() <-chan struct{}
}

// Forwarder is a unary interceptor that proxies calls to the leader.
type Forwarder struct {
	lead Leadership
	dial func(addr string) (*grpc.ClientConn, error)
	// local lists full method names always served by the receiving manager.
	local map[string]bool
	// LeaderWait bounds how long a call waits for an election to finish.
	LeaderWait time.Duration
	log        *slog.Logger

	mu    sync.Mutex // guards conns and replies
	conns map[string]*grpc.ClientConn
	// replies caches the reply message type of each method.
	replies map[string]protoreflect.MessageType
}

// New returns a forwarder; dial opens a client connection to a manager.
func New(lead Leadership, dial func(addr string) (*grpc.ClientConn, error), logger *slog.Logger, local ...string) *Forwarder {
	f := &Forwarder{
		lead: lead, dial: dial, local: map[string]bool{}, LeaderWait: 10 * time.Second,
		log: logger.With("component", "forward"), conns: map[string]*grpc.ClientConn{},
		replies: map[string]protoreflect.MessageType{},
	}
	for _, m := range local {
		f.local[m] = true
	}
	return f
}

// Close closes the connections to former and current leaders.
func (f *Forwarder) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for addr, c := range f.conns {
		c.Close()
		delete(f.conns, addr)
	}
}

// Redial makes later calls dial the leader afresh: the node's certificate
// changed (renewal, role change), and connections made with an older one
// are refused once the store no longer names it. Calls in flight on the old
// connections finish: those are closed after grace.
func (f *Forwarder) Redial(grace time.Duration) {
	f.mu.Lock()
	old := f.conns
	f.conns = map[string]*grpc.ClientConn{}
	f.mu.Unlock()
	if len(old) == 0 {
		return
	}
	time.AfterFunc(grace, func() {
		for _, c := range old {
			c.Close()
		}
	})
}

// Unary is the interceptor. It must run after the authorizer, so that the
// caller's identity is known and checked before anything is forwarded.
func (f *Forwarder) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := checkForwarder(ctx); err != nil {
			return nil, err
		}
		if f.local[info.FullMethod] || f.lead.IsLeader() {
			return handler(ctx, req)
		}
		if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(mdForwarded)) > 0 {
			// The sender thought we lead; a second hop could loop. We may
			// just have been elected and not yet be ready (barrier):
			// wait a little for that before refusing.
			if f.awaitLeadership(ctx, forwardedWait) {
				return handler(ctx, req)
			}
			return nil, errdefs.Unavailablef("forwarded to a manager that is no longer the leader; retry")
		}
		reply, err := f.newReply(info.FullMethod)
		if err != nil {
			return nil, errdefs.Internalf("%v", err)
		}
		out := metadata.Pairs(mdForwarded, "1")
		if id, ok := Identity(ctx); ok {
			out.Set(mdForwardedFor, id.NodeID+"/"+string(id.Role)+"/"+id.ClusterID)
		}
		octx := metadata.NewOutgoingContext(ctx, out)
		// A leader that just died is still "the leader" here until raft
		// notices: the call then fails UNAVAILABLE. Rather than hand that
		// to the client (whose retry backs off), wait for the election
		// and try the new leader, within LeaderWait.
		deadline := time.NewTimer(f.LeaderWait)
		defer deadline.Stop()
		backoff := 20 * time.Millisecond
		for {
			addr, err := f.waitLeader(ctx, deadline.C)
			if err != nil {
				return nil, err
			}
			conn, err := f.conn(addr)
			if err != nil {
				return nil, errdefs.Unavailablef("leader %s unreachable: %v", addr, err)
			}
			err = conn.Invoke(octx, info.FullMethod, req, reply)
			if !errdefs.IsUnavailable(err) || ctx.Err() != nil {
				return reply, err
			}
			f.log.Debug("leader unavailable; waiting for a new one", "leader", addr, "method", info.FullMethod, "err", err)
			if werr := f.waitLeaderChange(ctx, addr, backoff, deadline.C); werr != nil {
				return nil, err
			}
			backoff = min(2*backoff, 200*time.Millisecond)
		}
	}
}

// Stream is the interceptor for streaming calls, which are never forwarded:
// it only refuses forwarding metadata from a peer that is not a current
// manager. It must run after the authorizer.
func (f *Forwarder) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := checkForwarder(ss.Context()); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

// checkForwarder refuses a call carrying forwarding metadata unless its
// direct peer is a current manager: the identity the authorizer put into
// ctx has the role the store grants now, so a worker, or a demoted manager
// still holding its manager certificate, cannot act for another node.
func checkForwarder(ctx context.Context) error {
	// ValueFromIncomingContext looks the two keys up without copying the
	// whole metadata, which FromIncomingContext does on every call.
	if len(metadata.ValueFromIncomingContext(ctx, mdForwarded)) == 0 && len(metadata.ValueFromIncomingContext(ctx, mdForwardedFor)) == 0 {
		return nil
	}
	id, ok := trust.IdentityFrom(ctx)
	if ok && id.Role == trust.RoleManager {
		return nil
	}
	who := "an anonymous caller"
	if ok {
		who = id.String()
	}
	return errdefs.PermissionDeniedf("%s may not forward calls (%s is honoured only from a current manager)", who, mdForwardedFor)
}

// waitLeaderChange waits until the leader known here is no longer addr,
// or for retry (the same leader may answer once it is ready).
func (f *Forwarder) waitLeaderChange(ctx context.Context, addr string, retry time.Duration, deadline <-chan time.Time) error {
	poll := time.NewTicker(20 * time.Millisecond) // Leader() may change without a leadership event here
	defer poll.Stop()
	again := time.NewTimer(retry)
	defer again.Stop()
	for {
		ch := f.lead.LeadershipChanged()
		if _, cur := f.lead.Leader(); cur != addr {
			return nil
		}
		select {
		case <-ch:
		case <-poll.C:
		case <-again.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return errors.New("leader unchanged")
		}
	}
}

// awaitLeadership waits up to max for this manager to be a ready leader.
func (f *Forwarder) awaitLeadership(ctx context.Context, max time.Duration) bool {
	t := time.NewTimer(max)
	defer t.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		ch := f.lead.LeadershipChanged()
		if f.lead.IsLeader() {
			return true
		}
		select {
		case <-ch:
		case <-poll.C:
		case <-ctx.Done():
			return false
		case <-t.C:
			return false
		}
	}
}

// waitLeader returns the leader's address, waiting for an election in
// progress to finish (bounded by LeaderWait and the call's deadline).
func (f *Forwarder) waitLeader(ctx context.Context, deadline <-chan time.Time) (string, error) {
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		ch := f.lead.LeadershipChanged()
		if _, addr := f.lead.Leader(); addr != "" {
			return addr, nil
		}
		select {
		case <-ch:
		case <-poll.C:
		case <-ctx.Done():
			return "", ctx.Err()
		case <-deadline:
			return "", errdefs.NoQuorumf("no raft leader elected within %v: fewer than half of the managers are up or reachable (the cluster has lost quorum)", f.LeaderWait)
		}
	}
}

func (f *Forwarder) conn(addr string) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.conns[addr]; ok {
		if c.GetState() == connectivity.TransientFailure {
			// It failed to reach addr before (down then, as a leader
			// just killed is): the leader named now may be it,
			// restarted; try again now rather than after the back-off.
			c.ResetConnectBackoff()
		}
		return c, nil
	}
	c, err := f.dial(addr)
	if err != nil {
		return nil, err
	}
	f.conns[addr] = c
	return c, nil
}

func (f *Forwarder) newReply(fullMethod string) (proto.Message, error) {
	f.mu.Lock()
	mt, ok := f.replies[fullMethod]
	f.mu.Unlock()
	if ok {
		return mt.New().Interface(), nil
	}
	svc, method, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return nil, fmt.Errorf("malformed method %q", fullMethod)
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return nil, fmt.Errorf("service of %q: %w", fullMethod, err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("%q is not a service", svc)
	}
	md := sd.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		return nil, fmt.Errorf("no method %q in %q", method, svc)
	}
	mt, err = protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		return nil, fmt.Errorf("reply type of %q: %w", fullMethod, err)
	}
	f.mu.Lock()
	f.replies[fullMethod] = mt
	f.mu.Unlock()
	return mt.New().Interface(), nil
}

// Identity returns the identity a handler should act for: the original
// caller of a call forwarded by a current manager (the authorizer checked
// the direct peer against the store, and the forwarding manager checked the
// original caller against its own), else the direct peer. Handlers that
// issue something for "the caller's own node" (certificate renewal) must
// use trust.IdentityFrom instead: a node acts only for itself.
func Identity(ctx context.Context) (trust.Identity, bool) {
	id, ok := trust.IdentityFrom(ctx)
	if !ok {
		return trust.Identity{}, false
	}
	if id.Role != trust.RoleManager {
		return id, true
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(mdForwardedFor); len(v) == 1 {
		parts := strings.SplitN(v[0], "/", 3)
		if len(parts) == 3 {
			return trust.Identity{NodeID: parts[0], Role: trust.Role(parts[1]), ClusterID: parts[2]}, true
		}
	}
	return id, true
}
