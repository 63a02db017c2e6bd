package httpapi

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/shoal-dev/shoal/errdefs"
	"github.com/shoal-dev/shoal/manager/pipeline"
	"github.com/shoal-dev/shoal/trust"
)

// Direct is the gateway's connection for unary calls. It calls the
// manager's service implementations in the caller's goroutine through
// the same interceptor chain as the gRPC server (error mapping, the
// authorizer, the forwarder), with the context a gRPC call would have:
// the peer is the HTTPS client's verified TLS connection, or else
// trust.InProcessInfo (callerPeer), and the incoming metadata is exactly
// what the gateway put into the call (the Authorization header, the
// verified client certificate). What it
// saves is the second hop: no protobuf encoding and decoding of request
// and reply, no HTTP/2 framing through an in-memory pipe, no second
// goroutine hand-off. Streams (watches, logs, stats, exec), and unary
// methods of services not registered here, still go over the in-process
// gRPC connection (Conn).
//
// The manager registers each service on it as on its grpc.Server (Tee).
type Direct struct {
	// Unary is the gRPC server's unary interceptor chain, in order.
	Unary []grpc.UnaryServerInterceptor
	// Conn is the in-process gRPC connection, for streaming calls and
	// methods not registered here.
	Conn grpc.ClientConnInterface

	mu      sync.RWMutex // guards methods
	methods map[string]directMethod
}

// directMethod is one unary method of a registered service.
type directMethod struct {
	impl    any
	handler func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error)
}

var _ grpc.ClientConnInterface = (*Direct)(nil)
var _ grpc.ServiceRegistrar = (*Direct)(nil)

// RegisterService implements grpc.ServiceRegistrar: desc's unary methods
// are then called on impl directly.
func (d *Direct) RegisterService(desc *grpc.ServiceDesc, impl any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.methods == nil {
		d.methods = map[string]directMethod{}
	}
	for _, m := range desc.Methods {
		d.methods["/"+desc.ServiceName+"/"+m.MethodName] = directMethod{impl: impl, handler: m.Handler}
	}
}

// inProcessPeer is the peer of every direct call: the in-process
// connection's (see InProcessListener), which nothing from the network
// can present.
var inProcessPeer = &peer.Peer{
	Addr:     &net.UnixAddr{Name: "in-process", Net: "unix"},
	AuthInfo: trust.InProcessInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}},
}

// tlsStateKey is the context key of the HTTPS caller's TLS state.
type tlsStateKey struct{}

// withTLSState hands Direct the TLS state of the HTTPS connection a
// request came on.
func withTLSState(ctx context.Context, st *tls.ConnectionState) context.Context {
	return context.WithValue(ctx, tlsStateKey{}, st)
}

// callerPeer is the peer a direct call's handler sees. A caller whose
// client certificate the HTTPS handshake verified against the cluster CA
// is that TLS peer, as when it calls gRPC itself: trust.PeerIdentity
// reads the identity from the verified chain, not re-parsing the DER the
// gateway also put into the metadata (trust.MDClientCert, for streams).
// Any other caller (a token, or nobody) is the in-process peer, which
// names no one by itself.
func callerPeer(ctx context.Context) *peer.Peer {
	st, _ := ctx.Value(tlsStateKey{}).(*tls.ConnectionState)
	if st == nil || len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return inProcessPeer
	}
	return &peer.Peer{Addr: inProcessPeer.Addr, AuthInfo: credentials.TLSInfo{State: *st,
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}}
}

// Invoke implements grpc.ClientConnInterface for unary calls.
func (d *Direct) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	d.mu.RLock()
	m, ok := d.methods[method]
	d.mu.RUnlock()
	if !ok {
		return d.Conn.Invoke(ctx, method, args, reply, opts...)
	}
	in, ok1 := args.(proto.Message)
	out, ok2 := reply.(proto.Message)
	if !ok1 || !ok2 {
		return errdefs.ToGRPC(errdefs.Internalf("%s: request or reply is not a protobuf message", method))
	}
	// The server side sees the gateway's outgoing metadata as incoming,
	// and no outgoing metadata: a handler that calls on (the forwarder,
	// an agent) sends only what it sets itself, never the caller's token.
	md, _ := metadata.FromOutgoingContext(ctx)
	ctx = metadata.NewOutgoingContext(ctx, nil)
	ctx = metadata.NewIncomingContext(ctx, md)
	ctx = peer.NewContext(ctx, callerPeer(ctx))
	st := &directStream{method: method}
	ctx = grpc.NewContextWithServerTransportStream(ctx, st)

	dec := func(v any) error {
		dst, ok := v.(proto.Message)
		if !ok {
			return fmt.Errorf("%s: request is not a protobuf message", method)
		}
		return move(dst, in)
	}
	resp, err := m.handler(m.impl, ctx, dec, pipeline.Chain(d.Unary))
	st.deliver(opts)
	if err != nil {
		return err
	}
	res, ok := resp.(proto.Message)
	if !ok || res == nil {
		return errdefs.ToGRPC(errdefs.Internalf("%s returned no reply", method))
	}
	if err := move(out, res); err != nil {
		return errdefs.ToGRPC(errdefs.Internalf("%v", err))
	}
	return nil
}

// NewStream implements grpc.ClientConnInterface: streams use the gRPC
// connection.
func (d *Direct) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return d.Conn.NewStream(ctx, desc, method, opts...)
}

// move makes dst hold src's fields without copying them (the fields'
// slices, maps and messages are shared): src is the gateway's request or
// the handler's reply, neither used again by its producer, as when gRPC
// hands them over. Both must be the same message type.
func move(dst, src proto.Message) error {
	d, s := dst.ProtoReflect(), src.ProtoReflect()
	if d.Descriptor() != s.Descriptor() {
		return fmt.Errorf("message %s where %s was expected", s.Descriptor().FullName(), d.Descriptor().FullName())
	}
	s.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		d.Set(fd, v)
		return true
	})
	if u := s.GetUnknown(); len(u) > 0 {
		d.SetUnknown(u)
	}
	return nil
}

// directStream collects the headers and trailers a handler sets
// (grpc.SetHeader), which the gateway turns into Grpc-Metadata- response
// headers as for a gRPC reply.
type directStream struct {
	method  string
	mu      sync.Mutex // guards header, trailer
	header  metadata.MD
	trailer metadata.MD
}

func (s *directStream) Method() string { return s.method }

func (s *directStream) SetHeader(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.header = metadata.Join(s.header, md)
	return nil
}

func (s *directStream) SendHeader(md metadata.MD) error { return s.SetHeader(md) }

func (s *directStream) SetTrailer(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trailer = metadata.Join(s.trailer, md)
	return nil
}

// deliver hands the headers and trailers to the call options asking for
// them (grpc.Header, grpc.Trailer).
func (s *directStream) deliver(opts []grpc.CallOption) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			*o.HeaderAddr = s.header
		case grpc.TrailerCallOption:
			*o.TrailerAddr = s.trailer
		}
	}
}

// Tee registers each service on every registrar: the manager's gRPC
// server and the gateway's Direct.
type Tee []grpc.ServiceRegistrar

// RegisterService implements grpc.ServiceRegistrar.
func (t Tee) RegisterService(desc *grpc.ServiceDesc, impl any) {
	for _, r := range t {
		r.RegisterService(desc, impl)
	}
}
