package trust

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"time"
)

// MinExpiredRenewalWindow is the least time after its expiry during which
// a node may still renew its certificate with proof of the old key; the
// window is the certificate's own lifetime when that is longer. A node
// switched off for longer must join again.
const MinExpiredRenewalWindow = 24 * time.Hour

// IssuedAt is when a certificate of this CA was signed (its NotBefore is
// backdated for clock skew).
func IssuedAt(cert *x509.Certificate) time.Time { return cert.NotBefore.Add(clockSkew) }

// RenewAt is when a node renews cert: at two thirds of its lifetime, which
// leaves a third of it for managers to be reachable again after an outage.
func RenewAt(cert *x509.Certificate) time.Time {
	issued := IssuedAt(cert)
	if !cert.NotAfter.After(issued) {
		return cert.NotAfter
	}
	return issued.Add(cert.NotAfter.Sub(issued) * 2 / 3)
}

// ParseCertPEM parses the first certificate of a PEM block list.
func ParseCertPEM(certPEM []byte) (*x509.Certificate, error) { return parseCertPEM(certPEM) }

// SerialOf is a certificate's serial as the store records it.
func SerialOf(cert *x509.Certificate) string { return cert.SerialNumber.Text(16) }

// SignRenewalProof signs the SHA-256 of csrPEM with the old private key:
// the proof an expired node sends (RenewNodeCertificateRequest
// old_key_signature) that it holds the key of the certificate it renews.
func SignRenewalProof(oldKeyPEM, csrPEM []byte) ([]byte, error) {
	key, err := parseKeyPEM(oldKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("renewal proof: %w", err)
	}
	sum := sha256.Sum256(csrPEM)
	var opts crypto.SignerOpts = crypto.SHA256
	digest := sum[:]
	if _, ok := key.(ed25519.PrivateKey); ok {
		// Ed25519 signs the message itself; the message is the digest.
		opts = crypto.Hash(0)
	}
	sig, err := key.Sign(rand.Reader, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("renewal proof: signing: %w", err)
	}
	return sig, nil
}

// VerifyRenewalProof checks an expired node's renewal request: oldCertPEM
// must have been issued by this CA to a node (its expiry aside), have
// expired at most its renewal window before now, and sig must be its key's
// signature over the SHA-256 of csrPEM. It returns the old certificate's
// identity; the caller still checks the serial against the store.
func (c *CA) VerifyRenewalProof(oldCertPEM, sig, csrPEM []byte, now time.Time) (Identity, error) {
	old, err := parseCertPEM(oldCertPEM)
	if err != nil {
		return Identity{}, fmt.Errorf("old_cert_pem: %w", err)
	}
	// Verified as of its last valid moment: only its age is forgiven.
	if _, err := old.Verify(x509.VerifyOptions{Roots: c.pool, CurrentTime: old.NotAfter.Add(-time.Second),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return Identity{}, fmt.Errorf("old_cert_pem: not a certificate of this cluster's CA: %w", err)
	}
	id, err := IdentityFromCert(old)
	if err != nil {
		return Identity{}, fmt.Errorf("old_cert_pem: %w", err)
	}
	if id.Role != RoleManager && id.Role != RoleWorker {
		return Identity{}, fmt.Errorf("old_cert_pem: %s is not a node certificate", id)
	}
	window := max(old.NotAfter.Sub(IssuedAt(old)), MinExpiredRenewalWindow)
	if now.After(old.NotAfter.Add(window)) {
		return Identity{}, fmt.Errorf("old_cert_pem: certificate of node %q expired at %s, more than %s ago: join the node again", id.NodeID, old.NotAfter.UTC().Format(time.RFC3339), window)
	}
	if len(sig) == 0 {
		return Identity{}, errors.New("old_key_signature: required with old_cert_pem")
	}
	sum := sha256.Sum256(csrPEM)
	if !verifySignature(old.PublicKey, sum[:], sig) {
		return Identity{}, errors.New("old_key_signature: not a signature of the certificate request by the old certificate's key")
	}
	return id, nil
}

func verifySignature(pub crypto.PublicKey, digest, sig []byte) bool {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, digest, sig)
	case ed25519.PublicKey:
		return ed25519.Verify(k, digest, sig)
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig) == nil
	}
	return false
}

// SignAdminCSR signs an admin client certificate (OU admin, client auth
// only) named name for the key in csrPEM: `shoal admin-cert create` keeps
// the private key with the operator.
func (c *CA) SignAdminCSR(csrPEM []byte, name string, ttl time.Duration) (certPEM []byte, cert *x509.Certificate, err error) {
	if name == "" {
		return nil, nil, errors.New("sign admin certificate: the name is empty")
	}
	if ttl <= 0 {
		return nil, nil, fmt.Errorf("sign admin certificate %q: the lifetime must be positive, got %s", name, ttl)
	}
	csr, err := parseCSRPEM(csrPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("sign admin certificate %q: %w", name, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, fmt.Errorf("sign admin certificate %q: the request's signature is invalid: %w", name, err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, nil, fmt.Errorf("sign admin certificate %q: %w", name, err)
	}
	tmpl := &x509.Certificate{
		Subject: pkix.Name{
			CommonName:         name,
			OrganizationalUnit: []string{string(RoleAdmin)},
			Organization:       []string{c.ClusterID()},
		},
		KeyUsage:              leafKeyUsage(csr.PublicKey),
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	certPEM, _, err = c.sign(tmpl, csr.PublicKey, ttl)
	if err != nil {
		return nil, nil, fmt.Errorf("sign admin certificate %q: %w", name, err)
	}
	cert, err = parseCertPEM(certPEM)
	if err != nil {
		return nil, nil, err
	}
	return certPEM, cert, nil
}
