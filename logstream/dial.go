package logstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/shoal-dev/shoal/trust"
)

// ClientTLSConfig turns base, a client configuration holding the caller's
// certificate and the cluster CA (trust.CertStore.ClientTLSConfig or
// trust.ClientTLSConfigFromCreds, any server name), into one for dialling the
// agent API of node nodeID.
//
// Node certificates name a role (manager.shoal, worker.shoal), not a host,
// and a node's role changes with promotion, so no fixed server name fits.
// Go's host name check is therefore replaced, not dropped: the chain is
// verified against the cluster CA for server use, and the certificate must
// be a node certificate (manager or worker) naming exactly nodeID. That is
// stricter than a role name: it proves the caller reached the node it
// looked up, not just some node.
func ClientTLSConfig(base *tls.Config, nodeID string) (*tls.Config, error) {
	if base == nil || base.RootCAs == nil {
		return nil, errors.New("agent API client TLS: no cluster CA in the base configuration")
	}
	if nodeID == "" {
		return nil, errors.New("agent API client TLS: no node id to verify")
	}
	roots := base.RootCAs
	c := base.Clone()
	c.ServerName = ""
	c.NextProtos = []string{trust.ALPNGRPC}
	c.InsecureSkipVerify = true // verification is VerifyConnection's, below
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		return verifyNode(cs, roots, nodeID)
	}
	return c, nil
}

func verifyNode(cs tls.ConnectionState, roots *x509.CertPool, nodeID string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the agent presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("the agent's certificate is not valid for the cluster CA: %w", err)
	}
	id, err := trust.IdentityFromCert(leaf)
	if err != nil {
		return fmt.Errorf("the agent's certificate: %w", err)
	}
	if id.Role != trust.RoleManager && id.Role != trust.RoleWorker {
		return fmt.Errorf("the agent presented a %s certificate, not a node certificate", id.Role)
	}
	if id.NodeID != nodeID {
		return fmt.Errorf("the agent's certificate is node %q's, not node %q's", id.NodeID, nodeID)
	}
	return nil
}

// Dial returns a connection to the agent API of node nodeID at addr; see
// ClientTLSConfig for base. It does not wait for the connection.
func Dial(addr, nodeID string, base *tls.Config, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	conf, err := ClientTLSConfig(base, nodeID)
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(conf))}, opts...)...)
}
