package httpapi

import (
	"context"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/test/bufconn"

	"github.com/shoal-dev/shoal/trust"
)

// inProcessBuffer is each direction's buffer of an in-process connection.
const inProcessBuffer = 1 << 20

// InProcessListener is the in-memory listener the manager's gRPC server
// also serves, for the gateway in the same process. Its connections say
// so (InProcessAuthInfo), which only code in this process can arrange.
type InProcessListener struct {
	l *bufconn.Listener
}

// NewInProcessListener returns a listener for the manager's grpc.Server.
func NewInProcessListener() *InProcessListener {
	return &InProcessListener{l: bufconn.Listen(inProcessBuffer)}
}

// Accept implements net.Listener.
func (l *InProcessListener) Accept() (net.Conn, error) {
	c, err := l.l.Accept()
	if err != nil {
		return nil, err
	}
	return inProcessConn{c}, nil
}

// Close implements net.Listener.
func (l *InProcessListener) Close() error { return l.l.Close() }

// Addr implements net.Listener.
func (l *InProcessListener) Addr() net.Addr { return l.l.Addr() }

// DialContext opens a connection to the server side.
func (l *InProcessListener) DialContext(ctx context.Context, _ string) (net.Conn, error) {
	return l.l.DialContext(ctx)
}

// inProcessConn is the server side of an in-process connection.
type inProcessConn struct{ net.Conn }

// InProcessAuthInfo is what the manager's transport credentials hand gRPC
// for this connection instead of TLS state.
func (inProcessConn) InProcessAuthInfo() credentials.AuthInfo {
	return trust.InProcessInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}
}
