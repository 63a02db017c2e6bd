package trust

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// FetchRootCA asks the manager at addr for the cluster's root certificate and
// returns it only if its digest is wantDigest (from a join token).
//
// The connection is not verified: the joiner does not know the CA yet, that
// is what it is asking for. Nothing received is trusted until it hashes to the
// pinned digest, and the returned PEM is re-encoded from exactly the pinned
// certificate, so extra certificates a man in the middle might append never
// reach the caller's trust pool. The caller then dials again verifying the
// manager against this CA.
func FetchRootCA(ctx context.Context, addr, wantDigest string) (caPEM []byte, err error) {
	want := strings.ToLower(wantDigest)
	if !isHexDigest(want) {
		return nil, fmt.Errorf("fetching the root CA: the pinned digest must be %d hex characters", digestLen)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{ALPNGRPC},
		InsecureSkipVerify: true, // see above: the digest check is the verification
	})))
	if err != nil {
		return nil, fmt.Errorf("fetching the root CA from manager at %q: %w", addr, err)
	}
	defer conn.Close()
	resp, err := shoalv1.NewNodeCAClient(conn).GetRootCA(ctx, &shoalv1.GetRootCARequest{})
	if err != nil {
		return nil, fmt.Errorf("fetching the root CA from manager at %q: %w", addr, err)
	}
	cert, err := parseCertPEM(resp.GetCaCertPem())
	if err != nil {
		return nil, fmt.Errorf("manager at %q sent an unusable CA certificate: %w", addr, err)
	}
	if got := digestOfCert(cert); got != want {
		return nil, fmt.Errorf("manager at %q presented CA sha256:%s but the join token pins sha256:%s; refusing to join", addr, got[:12], want[:12])
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: cert.Raw}), nil
}

// JoinCredentials turns a join token into node credentials: it pins the CA
// from the token (FetchRootCA), makes a key and CSR, and asks the manager at
// addr — now verified as a manager of that CA — to issue a certificate.
// advertise is the host:port the node will be reached at. The private key
// never leaves this process except in the returned Creds.
func JoinCredentials(ctx context.Context, addr, token string, desc *shoalv1.NodeDescription, advertise string) (*Creds, *shoalv1.IssueNodeCertificateResponse, error) {
	token = strings.TrimSpace(token)
	digest, _, err := ParseJoinToken(token)
	if err != nil {
		return nil, nil, err
	}
	caPEM, err := FetchRootCA(ctx, addr, digest)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	keyPEM, csrPEM, err := NewKeyAndCSR()
	if err != nil {
		return nil, nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    pool,
		ServerName: ManagerServerName,
		NextProtos: []string{ALPNGRPC},
	})))
	if err != nil {
		return nil, nil, fmt.Errorf("joining through manager at %q: %w", addr, err)
	}
	defer conn.Close()
	resp, err := shoalv1.NewNodeCAClient(conn).IssueNodeCertificate(ctx, &shoalv1.IssueNodeCertificateRequest{
		Token: token, CsrPem: csrPEM, Addr: advertise, Description: desc,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("requesting a node certificate from manager at %q: %w", addr, err)
	}
	creds := &Creds{CACertPEM: caPEM, CertPEM: resp.GetCertPem(), KeyPEM: keyPEM}
	if err := checkIssued(creds, pool, resp, digest); err != nil {
		return nil, nil, fmt.Errorf("manager at %q issued an unusable certificate: %w", addr, err)
	}
	return creds, resp, nil
}

// checkIssued makes sure a freshly issued certificate is what was asked for,
// so a faulty manager is caught at join rather than at the first RPC.
func checkIssued(creds *Creds, pool *x509.CertPool, resp *shoalv1.IssueNodeCertificateResponse, digest string) error {
	if got, err := DigestOf(resp.GetCaCertPem()); err != nil || got != digest {
		return fmt.Errorf("the response names a CA other than the pinned sha256:%s", digest[:12])
	}
	if err := creds.Validate(); err != nil {
		return err
	}
	leaf, err := creds.leaf()
	if err != nil {
		return err
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:       pool,
		CurrentTime: time.Now(),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return err
	}
	id, err := IdentityFromCert(leaf)
	if err != nil {
		return err
	}
	if id.NodeID != resp.GetNodeId() || id.Role.Proto() != resp.GetRole() || id.Role == RoleAdmin {
		return fmt.Errorf("the certificate names %s but the response says node %q with role %s", id, resp.GetNodeId(), resp.GetRole())
	}
	return nil
}
