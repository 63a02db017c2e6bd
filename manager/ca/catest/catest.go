// Package catest issues certificates of a throw-away cluster CA for tests
// of components that speak mTLS (transport, agent API, log broker, CLI).
package catest

import (
	"testing"
	"time"

	"github.com/shoal-dev/shoal/manager/ca"
)

// NewRoot returns a new cluster CA for cluster id "c1".
func NewRoot(t testing.TB) *ca.CA {
	t.Helper()
	root, err := ca.NewRootCA("c1")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// NodeCerts issues a key and a one-hour certificate for a node (or admin)
// of root's cluster and returns them as a certificate store.
func NodeCerts(t testing.TB, root *ca.CA, id string, role ca.Role) *ca.CertStore {
	t.Helper()
	keyPEM, csrPEM, err := ca.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := root.SignCSR(csrPEM, id, role, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ca.NewCertStore(&ca.Creds{CACertPEM: root.CertPEM(), CertPEM: certPEM, KeyPEM: keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
