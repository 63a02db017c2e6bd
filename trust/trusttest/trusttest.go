// Package trusttest issues certificates of a throw-away cluster CA for tests
// of components that speak mTLS (transport, agent API, log broker, CLI).
package trusttest

import (
	"testing"
	"time"

	"github.com/shoal-dev/shoal/trust"
)

// NewRoot returns a new cluster CA for cluster id "c1".
func NewRoot(t testing.TB) *trust.CA {
	t.Helper()
	root, err := trust.NewRootCA("c1")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// NodeCerts issues a key and a one-hour certificate for a node (or admin)
// of root's cluster and returns them as a certificate store.
func NodeCerts(t testing.TB, root *trust.CA, id string, role trust.Role) *trust.CertStore {
	t.Helper()
	keyPEM, csrPEM, err := trust.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := root.SignCSR(csrPEM, id, role, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, err := trust.NewCertStore(&trust.Creds{CACertPEM: root.CertPEM(), CertPEM: certPEM, KeyPEM: keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
