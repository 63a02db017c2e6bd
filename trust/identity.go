package trust

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// ErrNoPeerCertificate means the peer presented no certificate that the TLS
// handshake verified against the cluster CA.
var ErrNoPeerCertificate = errors.New("the peer presented no certificate verified by the cluster CA")

// Identity is who a certificate says its holder is.
type Identity struct {
	NodeID    string // CN: the node id, or the admin's name for RoleAdmin
	ClusterID string // O
	Role      Role   // OU
	// Serial is the certificate's serial number in lower-case hex, as the
	// store records it (Node.cert_serial, AdminCertificate.serial): the
	// certificate is honoured only while the store still names it.
	Serial string
}

// String is for logs: `worker "abc"`.
func (id Identity) String() string { return fmt.Sprintf("%s %q", id.Role, id.NodeID) }

// IdentityFromCert reads the identity out of a certificate issued by a
// cluster CA. It does not verify the certificate: callers pass only
// certificates from a verified chain.
func IdentityFromCert(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, errors.New("identity: no certificate")
	}
	s := cert.Subject
	if s.CommonName == "" {
		return Identity{}, errors.New("identity: the certificate has no common name (node id)")
	}
	// Exactly one of each: a certificate naming two roles or clusters is
	// ambiguous, and this CA never issues one.
	if len(s.OrganizationalUnit) != 1 || !Role(s.OrganizationalUnit[0]).valid() {
		return Identity{}, fmt.Errorf("identity: certificate %q does not carry exactly one known role (OU %q)", s.CommonName, s.OrganizationalUnit)
	}
	if len(s.Organization) != 1 || s.Organization[0] == "" {
		return Identity{}, fmt.Errorf("identity: certificate %q does not carry exactly one cluster id (O %q)", s.CommonName, s.Organization)
	}
	id := Identity{NodeID: s.CommonName, ClusterID: s.Organization[0], Role: Role(s.OrganizationalUnit[0])}
	if cert.SerialNumber != nil {
		id.Serial = serialText(cert.SerialNumber)
	}
	return id, nil
}

// serialText is n.Text(16) with one allocation (the string) for the
// serials a CA issues (positive, at most 20 bytes: RFC 5280), where
// big.Int.Text takes two; it runs on every authorized call.
func serialText(n *big.Int) string {
	if n.Sign() <= 0 || n.BitLen() > 160 {
		return n.Text(16)
	}
	var raw [20]byte
	var out [40]byte
	n.FillBytes(raw[:])
	hex.Encode(out[:], raw[:])
	i := 0
	for i < len(out)-1 && out[i] == '0' {
		i++
	}
	return string(out[i:])
}

// PeerIdentity returns the identity of a gRPC call's peer from its verified
// TLS chain. Certificates the handshake did not verify are never trusted.
func PeerIdentity(ctx context.Context) (Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return Identity{}, ErrNoPeerCertificate
	}
	var chains [][]*x509.Certificate
	switch info := p.AuthInfo.(type) {
	case credentials.TLSInfo:
		chains = info.State.VerifiedChains
	case *credentials.TLSInfo:
		chains = info.State.VerifiedChains
	case InProcessInfo:
		return inProcessIdentity(ctx)
	default:
		return Identity{}, fmt.Errorf("%w (the connection is %s, not TLS)", ErrNoPeerCertificate, p.AuthInfo.AuthType())
	}
	if len(chains) == 0 || len(chains[0]) == 0 {
		return Identity{}, ErrNoPeerCertificate
	}
	return IdentityFromCert(chains[0][0])
}

type identityKey struct{}

// WithIdentity returns ctx carrying id; the Authorizer sets it for handlers.
// One allocation (context.WithValue takes two: the context and id boxed in
// an interface), on every authorized call.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return &identityCtx{Context: ctx, id: id}
}

// identityCtx is context.WithValue(ctx, identityKey{}, id) in one object;
// Value hands out a pointer to its id (no allocation), never written.
type identityCtx struct {
	context.Context
	id Identity
}

func (c *identityCtx) Value(key any) any {
	if _, ok := key.(identityKey); ok {
		return &c.id
	}
	return c.Context.Value(key)
}

func (c *identityCtx) String() string { return "trust.WithIdentity(" + c.id.String() + ")" }

// IdentityFrom returns the identity the Authorizer put into ctx.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(*Identity)
	if !ok {
		return Identity{}, false
	}
	return *id, true
}

// InProcessInfo is the AuthInfo of a connection made inside the manager
// process: the HTTP gateway's connection to its own gRPC server. Nothing
// from the network can have it. Such a connection carries no certificate
// of its own: each call names its caller by the client certificate the
// HTTPS server verified (MDClientCert), or by an API token.
type InProcessInfo struct{ credentials.CommonAuthInfo }

// AuthType implements credentials.AuthInfo.
func (InProcessInfo) AuthType() string { return "in-process" }

// MDClientCert is the metadata key (binary: gRPC base64-encodes it) that
// carries the DER of the client certificate an in-process caller
// verified. It is honoured only on InProcessInfo connections; the gateway
// never copies it from an HTTP request.
const MDClientCert = "shoal-verified-client-cert-bin"

// inProcessIdentity reads the identity of an in-process call from the
// certificate its gateway verified.
func inProcessIdentity(ctx context.Context) (Identity, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(MDClientCert)
	if len(v) != 1 {
		return Identity{}, ErrNoPeerCertificate
	}
	cert, err := x509.ParseCertificate([]byte(v[0]))
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrNoPeerCertificate, err)
	}
	return IdentityFromCert(cert)
}
