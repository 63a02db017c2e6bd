package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc/credentials"
)

// ServerCreds are the transport credentials of a gRPC server serving
// Mux.GRPC(): the mux has already completed the TLS handshake, so these only
// expose its state to gRPC (and through it to trust.PeerIdentity).
func ServerCreds() credentials.TransportCredentials { return serverCreds{} }

type serverCreds struct{}

func (serverCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("transport: ServerCreds are for servers on a Mux; dial with credentials.NewTLS")
}

func (serverCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	// The HTTP gateway's in-memory connection (httpapi.InProcessListener):
	// no TLS, each call names its caller (trust.InProcessInfo).
	if ip, ok := raw.(interface{ InProcessAuthInfo() credentials.AuthInfo }); ok {
		return raw, ip.InProcessAuthInfo(), nil
	}
	tc, ok := raw.(*tls.Conn)
	if !ok {
		return nil, nil, fmt.Errorf("transport: connection from %s was not handshaken by the mux (it is a %T)", raw.RemoteAddr(), raw)
	}
	st := tc.ConnectionState()
	if !st.HandshakeComplete {
		return nil, nil, fmt.Errorf("transport: connection from %s has not completed its TLS handshake", raw.RemoteAddr())
	}
	return tc, credentials.TLSInfo{
		State:          st,
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
	}, nil
}

func (serverCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (c serverCreds) Clone() credentials.TransportCredentials { return c }

// OverrideServerName is unused by gRPC and meaningless on a server.
func (serverCreds) OverrideServerName(string) error { return nil }
