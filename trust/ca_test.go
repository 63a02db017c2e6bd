package trust_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"slices"
	"strings"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

func parseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", certPEM)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestNewRootCA(t *testing.T) {
	root := newRoot(t, "cluster-1")
	cert := parseCert(t, root.CertPEM())
	if !cert.IsCA || cert.Subject.CommonName != "shoal-root-ca" || !slices.Equal(cert.Subject.Organization, []string{"cluster-1"}) {
		t.Errorf("root subject/CA flag: CA=%v subject=%v", cert.IsCA, cert.Subject)
	}
	if life := cert.NotAfter.Sub(time.Now()); life < 19*365*24*time.Hour || life > 21*365*24*time.Hour {
		t.Errorf("root lifetime %s, want about 20 years", life)
	}
	if root.ClusterID() != "cluster-1" {
		t.Errorf("ClusterID = %q", root.ClusterID())
	}
	d, err := trust.DigestOf(root.CertPEM())
	if err != nil || d != root.Digest() || len(d) != 64 {
		t.Errorf("DigestOf = %q, %v; Digest = %q", d, err, root.Digest())
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: root.Pool()}); err != nil {
		t.Errorf("root does not verify against its own pool: %v", err)
	}

	loaded, err := trust.LoadCA(root.CertPEM(), root.KeyPEM())
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if loaded.Digest() != root.Digest() || loaded.ClusterID() != "cluster-1" {
		t.Errorf("loaded CA differs: %q %q", loaded.Digest(), loaded.ClusterID())
	}
	// A loaded CA signs certificates the original's pool accepts.
	c := nodeCreds(t, loaded, "n1", trust.RoleWorker)
	if _, err := parseCert(t, c.CertPEM).Verify(x509.VerifyOptions{Roots: root.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("certificate of loaded CA: %v", err)
	}
}

func TestNewRootCARejectsEmptyCluster(t *testing.T) {
	if _, err := trust.NewRootCA(""); err == nil {
		t.Fatal("NewRootCA(\"\") succeeded")
	}
}

func TestLoadCARejects(t *testing.T) {
	root := newRoot(t, "c1")
	other := newRoot(t, "c2")
	node := nodeCreds(t, root, "n1", trust.RoleManager)
	for _, tc := range []struct {
		name      string
		cert, key []byte
		want      string
	}{
		{"key of another CA", root.CertPEM(), other.KeyPEM(), "does not belong"},
		{"node certificate", node.CertPEM, node.KeyPEM, "not a certificate authority"},
		{"garbage cert", []byte("nope"), root.KeyPEM(), "no PEM"},
		{"garbage key", root.CertPEM(), []byte("nope"), "no PEM private key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := trust.LoadCA(tc.cert, tc.key)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadCA error = %v, want it to contain %q", err, tc.want)
			}
			if bytes.Contains([]byte(err.Error()), tc.key) && len(tc.key) > 10 {
				t.Fatal("error quotes the key")
			}
		})
	}
}

func TestSignCSR(t *testing.T) {
	root := newRoot(t, "cluster-1")
	for _, tc := range []struct {
		role    trust.Role
		dnsName string
		wrong   string
	}{
		{trust.RoleManager, trust.ManagerServerName, trust.WorkerServerName},
		{trust.RoleWorker, trust.WorkerServerName, trust.ManagerServerName},
	} {
		t.Run(string(tc.role), func(t *testing.T) {
			keyPEM, csrPEM, err := trust.NewKeyAndCSR()
			if err != nil {
				t.Fatal(err)
			}
			before := time.Now()
			certPEM, serial, err := root.SignCSR(csrPEM, "node-1", tc.role, testTTL)
			if err != nil {
				t.Fatalf("SignCSR: %v", err)
			}
			cert := parseCert(t, certPEM)
			if serial != cert.SerialNumber.Text(16) || serial == "" {
				t.Errorf("serial %q, certificate has %s", serial, cert.SerialNumber.Text(16))
			}
			id, err := trust.IdentityFromCert(cert)
			if err != nil || withoutSerial(id) != (trust.Identity{NodeID: "node-1", ClusterID: "cluster-1", Role: tc.role}) {
				t.Errorf("identity = %+v, %v", id, err)
			}
			if !slices.Equal(cert.DNSNames, []string{tc.dnsName}) {
				t.Errorf("DNS names %q, want [%s]", cert.DNSNames, tc.dnsName)
			}
			if cert.IsCA {
				t.Error("leaf is a CA")
			}
			if !cert.NotBefore.Before(before.Add(-50*time.Second)) || cert.NotAfter.After(before.Add(testTTL+time.Minute)) {
				t.Errorf("validity %s .. %s", cert.NotBefore, cert.NotAfter)
			}
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				if _, err := cert.Verify(x509.VerifyOptions{Roots: root.Pool(), DNSName: tc.dnsName, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
					t.Errorf("verify for usage %v: %v", usage, err)
				}
			}
			// What keeps a worker from posing as a manager (and back).
			if _, err := cert.Verify(x509.VerifyOptions{Roots: root.Pool(), DNSName: tc.wrong}); err == nil {
				t.Errorf("%s certificate verifies as %s", tc.role, tc.wrong)
			}
			// Another cluster's CA does not accept it.
			if _, err := cert.Verify(x509.VerifyOptions{Roots: newRoot(t, "cluster-2").Pool()}); err == nil {
				t.Error("certificate verifies against another cluster's CA")
			}
			c := &trust.Creds{CACertPEM: root.CertPEM(), CertPEM: certPEM, KeyPEM: keyPEM}
			if err := c.Validate(); err != nil {
				t.Errorf("issued credentials do not validate: %v", err)
			}
		})
	}
}

func TestSignCSRClampsToRoot(t *testing.T) {
	root := newRoot(t, "c")
	_, csrPEM, _ := trust.NewKeyAndCSR()
	certPEM, _, err := root.SignCSR(csrPEM, "n", trust.RoleWorker, 100*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := parseCert(t, certPEM).NotAfter, parseCert(t, root.CertPEM()).NotAfter; !got.Equal(want) {
		t.Errorf("NotAfter %s, want the root's %s", got, want)
	}
}

func TestSignCSRRejects(t *testing.T) {
	root := newRoot(t, "c")
	_, csrPEM, err := trust.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	// Flip the last byte of the DER, inside the signature: the request
	// still parses but no longer proves possession of the key.
	block, _ := pem.Decode(csrPEM)
	der := bytes.Clone(block.Bytes)
	der[len(der)-1] ^= 0xff
	badSig := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})

	for _, tc := range []struct {
		name   string
		csr    []byte
		nodeID string
		role   trust.Role
		ttl    time.Duration
		want   string
	}{
		{"bad signature", badSig, "n", trust.RoleWorker, testTTL, "signature"},
		{"not PEM", []byte("hello"), "n", trust.RoleWorker, testTTL, "no PEM"},
		{"certificate instead of CSR", root.CertPEM(), "n", trust.RoleWorker, testTTL, "no PEM"},
		{"empty node id", csrPEM, "", trust.RoleWorker, testTTL, "node id is empty"},
		{"admin role", csrPEM, "n", trust.RoleAdmin, testTTL, "not a node role"},
		{"no role", csrPEM, "n", "", testTTL, "not a node role"},
		{"zero ttl", csrPEM, "n", trust.RoleManager, 0, "lifetime"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := root.SignCSR(tc.csr, tc.nodeID, tc.role, tc.ttl)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("SignCSR error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestIssueAdmin(t *testing.T) {
	root := newRoot(t, "c")
	c := adminCreds(t, root)
	cert := parseCert(t, c.CertPEM)
	id, err := c.Identity()
	if err != nil || withoutSerial(id) != (trust.Identity{NodeID: "admin", ClusterID: "c", Role: trust.RoleAdmin}) {
		t.Errorf("identity = %+v, %v", id, err)
	}
	if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || len(cert.DNSNames) != 0 {
		t.Errorf("admin cert usages %v, DNS names %q", cert.ExtKeyUsage, cert.DNSNames)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: root.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("admin certificate verifies for server auth")
	}
	if err := c.Validate(); err != nil {
		t.Errorf("admin credentials: %v", err)
	}
	if _, _, err := root.IssueAdmin("", testTTL); err == nil {
		t.Error("IssueAdmin with an empty name succeeded")
	}
}

func TestIdentityFromCertRejects(t *testing.T) {
	root := newRoot(t, "c")
	good := parseCert(t, nodeCreds(t, root, "n", trust.RoleWorker).CertPEM)
	for _, tc := range []struct {
		name   string
		mutate func(*x509.Certificate)
	}{
		{"no CN", func(c *x509.Certificate) { c.Subject.CommonName = "" }},
		{"unknown role", func(c *x509.Certificate) { c.Subject.OrganizationalUnit = []string{"root"} }},
		{"two roles", func(c *x509.Certificate) { c.Subject.OrganizationalUnit = []string{"worker", "manager"} }},
		{"no cluster", func(c *x509.Certificate) { c.Subject.Organization = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := *good
			tc.mutate(&c)
			if id, err := trust.IdentityFromCert(&c); err == nil {
				t.Fatalf("IdentityFromCert = %+v, want an error", id)
			}
		})
	}
	if _, err := trust.IdentityFromCert(nil); err == nil {
		t.Error("IdentityFromCert(nil) succeeded")
	}
}

func TestRoleProto(t *testing.T) {
	for _, r := range []trust.Role{trust.RoleManager, trust.RoleWorker} {
		if got := trust.RoleFromProto(r.Proto()); got != r {
			t.Errorf("round trip of %s gave %q", r, got)
		}
	}
	if trust.RoleAdmin.Proto() != shoalv1.NodeRole_NODE_ROLE_UNSPECIFIED || trust.RoleFromProto(shoalv1.NodeRole_NODE_ROLE_UNSPECIFIED) != "" {
		t.Error("admin / unspecified do not map to each other's zero value")
	}
	if trust.RoleManager.Proto() != shoalv1.NodeRole_NODE_ROLE_MANAGER || trust.RoleWorker.Proto() != shoalv1.NodeRole_NODE_ROLE_WORKER {
		t.Error("wrong enum values")
	}
}

func TestDigestOfRejectsGarbage(t *testing.T) {
	if _, err := trust.DigestOf([]byte("not pem")); err == nil {
		t.Fatal("DigestOf(garbage) succeeded")
	}
}
