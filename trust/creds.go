package trust

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Creds are a node's (or an admin's) TLS credentials as kept on disk: the
// cluster CA certificate, its own certificate and its private key, all PEM.
type Creds struct {
	CACertPEM, CertPEM, KeyPEM []byte
}

// File names inside a credentials directory; <name> is the caller's.
const caCertFile = "ca.crt"

// LoadCreds reads dir/ca.crt, dir/<name>.crt and dir/<name>.key and checks
// that they belong together (Validate).
func LoadCreds(dir, name string) (*Creds, error) {
	if err := checkCredsName(name); err != nil {
		return nil, err
	}
	read := func(file string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			return nil, fmt.Errorf("loading credentials %q: %w", name, err)
		}
		return b, nil
	}
	var c Creds
	var err error
	if c.CACertPEM, err = read(caCertFile); err != nil {
		return nil, err
	}
	if c.CertPEM, err = read(name + ".crt"); err != nil {
		return nil, err
	}
	if c.KeyPEM, err = read(name + ".key"); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("loading credentials %q from %s: %w", name, dir, err)
	}
	return &c, nil
}

// SaveCreds writes c as dir/ca.crt, dir/<name>.crt and dir/<name>.key. Each
// file is replaced atomically (temp file, fsync, rename), the key with mode
// 0600 and the directory with 0700. All three temp files are written before
// the first rename, so a crash leaves at worst a pair that LoadCreds reports
// as mismatched, never a truncated file.
func SaveCreds(dir, name string, c *Creds) error {
	if err := checkCredsName(name); err != nil {
		return err
	}
	if c == nil {
		return errors.New("saving credentials: nil credentials")
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("saving credentials %q: %w", name, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("saving credentials %q: %w", name, err)
	}
	// MkdirAll leaves an existing directory's mode alone; keys must not sit
	// in a directory others can list.
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("saving credentials %q: %w", name, err)
	}
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{name + ".key", c.KeyPEM, 0o600},
		{name + ".crt", c.CertPEM, 0o644},
		{caCertFile, c.CACertPEM, 0o644},
	}
	temps := make([]string, 0, len(files))
	defer func() {
		for _, t := range temps {
			os.Remove(t) // no-op for temps already renamed
		}
	}()
	for _, f := range files {
		tmp, err := writeTemp(dir, f.name, f.data, f.perm)
		if err != nil {
			return fmt.Errorf("saving credentials %q: %w", name, err)
		}
		temps = append(temps, tmp)
	}
	for i, f := range files {
		if err := os.Rename(temps[i], filepath.Join(dir, f.name)); err != nil {
			return fmt.Errorf("saving credentials %q: %w", name, err)
		}
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("saving credentials %q: %w", name, err)
	}
	return nil
}

// writeTemp writes data to a new synced temp file beside its final name.
func writeTemp(dir, final string, data []byte, perm os.FileMode) (string, error) {
	f, err := os.CreateTemp(dir, "."+final+".tmp-*")
	if err != nil {
		return "", err
	}
	name := f.Name()
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

// syncDir makes the renames durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func checkCredsName(name string) error {
	if name == "" || name == "." || name == ".." || filepath.Base(name) != name || name+".crt" == caCertFile {
		return fmt.Errorf("credentials name %q is not a plain file name (or collides with %s)", name, caCertFile)
	}
	return nil
}

// Validate checks that the key belongs to the certificate, that the
// certificate was signed by the CA and that it carries an identity. It does
// not check validity dates: an expired certificate still loads, so that the
// node can say why it is refused.
func (c *Creds) Validate() error {
	caCert, err := parseCertPEM(c.CACertPEM)
	if err != nil {
		return fmt.Errorf("CA certificate: %w", err)
	}
	pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		// tls errors never include key bytes.
		return fmt.Errorf("certificate and key do not form a pair: %w", err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return fmt.Errorf("certificate: %w", err)
		}
	}
	if err := leaf.CheckSignatureFrom(caCert); err != nil {
		return fmt.Errorf("certificate %q was not issued by the CA in the credentials: %w", leaf.Subject.CommonName, err)
	}
	if _, err := IdentityFromCert(leaf); err != nil {
		return err
	}
	return nil
}

// leaf parses the credentials' own certificate.
func (c *Creds) leaf() (*x509.Certificate, error) {
	return parseCertPEM(c.CertPEM)
}

// Identity is who the credentials' certificate says its holder is.
func (c *Creds) Identity() (Identity, error) {
	leaf, err := c.leaf()
	if err != nil {
		return Identity{}, fmt.Errorf("credentials: %w", err)
	}
	return IdentityFromCert(leaf)
}

// NotAfter is when the credentials' certificate expires.
func (c *Creds) NotAfter() (time.Time, error) {
	leaf, err := c.leaf()
	if err != nil {
		return time.Time{}, fmt.Errorf("credentials: %w", err)
	}
	return leaf.NotAfter, nil
}

// clone deep-copies c, so stored credentials cannot change under a reader.
func (c *Creds) clone() *Creds {
	return &Creds{CACertPEM: bytes.Clone(c.CACertPEM), CertPEM: bytes.Clone(c.CertPEM), KeyPEM: bytes.Clone(c.KeyPEM)}
}

// ClientTLSConfigFromCreds is a static client configuration for credentials
// that never change during the process (the CLI's admin certificate):
// verify the server as serverName against the CA, present the certificate,
// speak gRPC.
func ClientTLSConfigFromCreds(c *Creds, serverName string) (*tls.Config, error) {
	if c == nil {
		return nil, errors.New("client TLS config: nil credentials")
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("client TLS config: %w", err)
	}
	pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("client TLS config: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(c.CACertPEM) {
		return nil, errors.New("client TLS config: no CA certificate in the credentials")
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
		ServerName:   serverName,
		NextProtos:   []string{ALPNGRPC},
	}, nil
}
