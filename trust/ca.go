package trust

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"
)

const (
	rootCommonName = "shoal-root-ca"
	rootValidity   = 20 * 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so that a node whose clock runs a little
	// behind the signing manager's accepts a certificate issued just now.
	clockSkew = time.Minute

	pemCertificate = "CERTIFICATE"
	pemCSR         = "CERTIFICATE REQUEST"
	pemPrivateKey  = "PRIVATE KEY"
)

// CA is the cluster's root certificate authority. It is immutable once made
// and safe for concurrent use.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	keyPEM  []byte
	digest  string
	pool    *x509.CertPool
}

// NewRootCA makes a new self-signed root for a cluster: ECDSA P-256, valid
// for 20 years, CN "shoal-root-ca", O clusterID.
func NewRootCA(clusterID string) (*CA, error) {
	if clusterID == "" {
		return nil, errors.New("new root CA: the cluster id is empty")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new root CA: generating the key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: rootCommonName, Organization: []string{clusterID}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(rootValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// The root signs only leaves: no intermediate CAs can hang below it.
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("new root CA: signing: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return LoadCA(pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der}), keyPEM)
}

// LoadCA loads a root CA from its PEM certificate and private key (PKCS#8,
// SEC 1 "EC PRIVATE KEY" or PKCS#1). It checks that the key belongs to the
// certificate and that the certificate is a CA carrying a cluster id.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA certificate: %w", err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("load CA: certificate %q is not a certificate authority", cert.Subject.CommonName)
	}
	if len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] == "" {
		return nil, errors.New("load CA: the certificate carries no cluster id (Subject O)")
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA key: %w", err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, errors.New("load CA: the private key does not belong to the certificate")
	}
	// Re-encode the key too, so KeyPEM is exactly one PKCS#8 block whatever
	// else the input held.
	canonicalKey, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{
		cert: cert,
		// Likewise CertPEM is exactly this one certificate.
		certPEM: pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: cert.Raw}),
		key:     key,
		keyPEM:  canonicalKey,
		digest:  digestOfCert(cert),
		pool:    pool,
	}, nil
}

// CertPEM returns the root certificate, PEM encoded.
func (c *CA) CertPEM() []byte { return bytes.Clone(c.certPEM) }

// KeyPEM returns the root's private key, PEM encoded. Never log it.
func (c *CA) KeyPEM() []byte { return bytes.Clone(c.keyPEM) }

// Digest is the hex SHA-256 of the root certificate's DER: what join tokens pin.
func (c *CA) Digest() string { return c.digest }

// ClusterID is the cluster id the root was made for (its Subject O).
func (c *CA) ClusterID() string { return c.cert.Subject.Organization[0] }

// Pool returns a new pool holding only the root certificate; the caller may
// modify it.
func (c *CA) Pool() *x509.CertPool { return c.pool.Clone() }

// Certificate returns the parsed root certificate. Do not modify it.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// SignCSR signs a node certificate for the key in csrPEM. The identity comes
// from the arguments, never from the request: the CSR only proves that the
// caller holds the private key. The certificate says CN=nodeID, OU=role,
// O=cluster id, is good for TLS server and client auth, carries the DNS SAN
// ManagerServerName (managers) or WorkerServerName (workers), and never
// outlives the root. serial is the certificate's serial number in hex.
func (c *CA) SignCSR(csrPEM []byte, nodeID string, role Role, ttl time.Duration) (certPEM []byte, serial string, err error) {
	if nodeID == "" {
		return nil, "", errors.New("sign certificate request: the node id is empty")
	}
	var dnsName string
	switch role {
	case RoleManager:
		dnsName = ManagerServerName
	case RoleWorker:
		dnsName = WorkerServerName
	default:
		return nil, "", fmt.Errorf("sign certificate request for node %q: role %q is not a node role (want manager or worker)", nodeID, role)
	}
	if ttl <= 0 {
		return nil, "", fmt.Errorf("sign certificate request for node %q: the lifetime must be positive, got %s", nodeID, ttl)
	}
	csr, err := parseCSRPEM(csrPEM)
	if err != nil {
		return nil, "", fmt.Errorf("sign certificate request for node %q: %w", nodeID, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, "", fmt.Errorf("sign certificate request for node %q: the request's signature is invalid: %w", nodeID, err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, "", fmt.Errorf("sign certificate request for node %q: %w", nodeID, err)
	}
	tmpl := &x509.Certificate{
		Subject: pkix.Name{
			CommonName:         nodeID,
			OrganizationalUnit: []string{string(role)},
			Organization:       []string{c.ClusterID()},
		},
		DNSNames:              []string{dnsName},
		KeyUsage:              leafKeyUsage(csr.PublicKey),
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	return c.sign(tmpl, csr.PublicKey, ttl)
}

// IssueAdmin makes a key and an admin client certificate (OU admin, client
// auth only, no DNS names) for the CLI.
func (c *CA) IssueAdmin(name string, ttl time.Duration) (certPEM, keyPEM []byte, err error) {
	if name == "" {
		return nil, nil, errors.New("issue admin certificate: the name is empty")
	}
	if ttl <= 0 {
		return nil, nil, fmt.Errorf("issue admin certificate %q: the lifetime must be positive, got %s", name, ttl)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("issue admin certificate %q: generating the key: %w", name, err)
	}
	tmpl := &x509.Certificate{
		Subject: pkix.Name{
			CommonName:         name,
			OrganizationalUnit: []string{string(RoleAdmin)},
			Organization:       []string{c.ClusterID()},
		},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	certPEM, _, err = c.sign(tmpl, &key.PublicKey, ttl)
	if err != nil {
		return nil, nil, fmt.Errorf("issue admin certificate %q: %w", name, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

// sign fills in serial and validity and signs tmpl with the root.
func (c *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey, ttl time.Duration) ([]byte, string, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, "", err
	}
	now := time.Now()
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-clockSkew)
	tmpl.NotAfter = now.Add(ttl)
	// A leaf outliving its root would only fail verification later, with a
	// less obvious error.
	if tmpl.NotAfter.After(c.cert.NotAfter) {
		tmpl.NotAfter = c.cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, "", fmt.Errorf("signing: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der}), serial.Text(16), nil
}

// NewKeyAndCSR makes an ECDSA P-256 key and a certificate request for it.
// The request names nobody: the CA decides the identity.
func NewKeyAndCSR() (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating a node key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("making a certificate request: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return keyPEM, pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der}), nil
}

// DigestOf returns the hex SHA-256 of the DER of the first certificate in
// caCertPEM: the value a join token pins.
func DigestOf(caCertPEM []byte) (string, error) {
	cert, err := parseCertPEM(caCertPEM)
	if err != nil {
		return "", fmt.Errorf("CA digest: %w", err)
	}
	return digestOfCert(cert), nil
}

func digestOfCert(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

func newSerial() (*big.Int, error) {
	// 128 random bits: serials must be unique per CA, and unpredictable ones
	// cost nothing.
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generating a certificate serial: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil // serials must be positive
}

// parseCertPEM parses the first CERTIFICATE block of data.
func parseCertPEM(data []byte) (*x509.Certificate, error) {
	block := firstBlock(data, pemCertificate)
	if block == nil {
		return nil, errors.New("no PEM \"CERTIFICATE\" block found")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing the certificate: %w", err)
	}
	return cert, nil
}

func parseCSRPEM(data []byte) (*x509.CertificateRequest, error) {
	block := firstBlock(data, pemCSR)
	if block == nil {
		return nil, errors.New("no PEM \"CERTIFICATE REQUEST\" block found")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing the certificate request: %w", err)
	}
	return csr, nil
}

// parseKeyPEM parses the first private key block of data. Its errors never
// quote the key material.
func parseKeyPEM(data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key block found")
		}
		var key any
		var err error
		switch block.Type {
		case pemPrivateKey:
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parsing the %s block: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
		return signer, nil
	}
}

func firstBlock(data []byte, typ string) *pem.Block {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil
		}
		if block.Type == typ {
			return block
		}
	}
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding the private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// checkPublicKey refuses keys too weak (or too odd) to put in a cluster
// certificate.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("unsupported ECDSA curve %s", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits is too small (want at least 2048)", k.N.BitLen())
		}
		return nil
	}
	return fmt.Errorf("unsupported public key type %T", pub)
}

func leafKeyUsage(pub crypto.PublicKey) x509.KeyUsage {
	if _, ok := pub.(*rsa.PublicKey); ok {
		// RSA key exchange is not used with TLS 1.3, but older verifiers
		// expect the bit on RSA leaves.
		return x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	}
	return x509.KeyUsageDigitalSignature
}
