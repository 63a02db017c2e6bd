package trust_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/trust"
)

func TestSaveLoadCreds(t *testing.T) {
	root := newRoot(t, "c")
	dir := filepath.Join(t.TempDir(), "data", "certs")
	c1 := nodeCreds(t, root, "n1", trust.RoleWorker)
	if err := trust.SaveCreds(dir, "node", c1); err != nil {
		t.Fatalf("SaveCreds: %v", err)
	}
	got, err := trust.LoadCreds(dir, "node")
	if err != nil {
		t.Fatalf("LoadCreds: %v", err)
	}
	if !bytes.Equal(got.CACertPEM, c1.CACertPEM) || !bytes.Equal(got.CertPEM, c1.CertPEM) || !bytes.Equal(got.KeyPEM, c1.KeyPEM) {
		t.Error("loaded credentials differ from saved")
	}
	modes := map[string]os.FileMode{"": 0o700, "node.key": 0o600, "node.crt": 0o644, "ca.crt": 0o644}
	for name, want := range modes {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", filepath.Join(dir, name), fi.Mode().Perm(), want)
		}
	}

	// Replacing (a promotion) leaves exactly the three files.
	c2 := nodeCreds(t, root, "n1", trust.RoleManager)
	if err := trust.SaveCreds(dir, "node", c2); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "ca.crt,node.crt,node.key" {
		t.Errorf("directory holds %v", names)
	}
	got, err = trust.LoadCreds(dir, "node")
	if err != nil {
		t.Fatal(err)
	}
	id, err := got.Identity()
	if err != nil || id.Role != trust.RoleManager || id.NodeID != "n1" || id.ClusterID != "c" {
		t.Errorf("identity after replace = %+v, %v", id, err)
	}
	na, err := got.NotAfter()
	if err != nil || na.IsZero() {
		t.Errorf("NotAfter = %v, %v", na, err)
	}
}

func TestLoadCredsRejects(t *testing.T) {
	root := newRoot(t, "c")
	dir := t.TempDir()
	if err := trust.SaveCreds(dir, "node", nodeCreds(t, root, "n1", trust.RoleWorker)); err != nil {
		t.Fatal(err)
	}
	if _, err := trust.LoadCreds(dir, "missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadCreds of a missing name: %v", err)
	}
	// A key that belongs to another certificate.
	other := nodeCreds(t, root, "n2", trust.RoleWorker)
	if err := os.WriteFile(filepath.Join(dir, "node.key"), other.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := trust.LoadCreds(dir, "node"); err == nil || !strings.Contains(err.Error(), "do not form a pair") {
		t.Errorf("LoadCreds with a foreign key: %v", err)
	}
	// A certificate from another CA.
	foreign := nodeCreds(t, newRoot(t, "x"), "n1", trust.RoleWorker)
	if err := trust.SaveCreds(dir, "node", &trust.Creds{CACertPEM: root.CertPEM(), CertPEM: foreign.CertPEM, KeyPEM: foreign.KeyPEM}); err == nil {
		t.Error("SaveCreds accepted a certificate of another CA")
	}
	for _, name := range []string{"", "..", "a/b", "ca"} {
		if _, err := trust.LoadCreds(dir, name); err == nil {
			t.Errorf("LoadCreds(%q) succeeded", name)
		}
	}
}

// TestCertStoreSwap runs a TLS server and client from two stores and swaps
// both stores' credentials: the next handshake must show the new
// certificates on both sides, with the same tls.Configs.
func TestCertStoreSwap(t *testing.T) {
	root := newRoot(t, "c")
	server := newStore(t, nodeCreds(t, root, "m1", trust.RoleManager))
	client := newStore(t, nodeCreds(t, root, "w1", trust.RoleWorker))

	ln, err := tls.Listen("tcp", "127.0.0.1:0", server.ServerTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					return
				}
				peer := "-"
				if st := tc.ConnectionState(); len(st.VerifiedChains) > 0 {
					peer = st.VerifiedChains[0][0].Subject.CommonName
				}
				tc.Write([]byte(peer + "\n"))
			}()
		}
	}()
	clientConf := client.ClientTLSConfig(trust.ManagerServerName, trust.ALPNGRPC)
	handshake := func() (serverCN, clientCN string, err error) {
		c, err := tls.Dial("tcp", ln.Addr().String(), clientConf)
		if err != nil {
			return "", "", err
		}
		defer c.Close()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return "", "", err
		}
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName, strings.TrimSpace(line), nil
	}

	if s, c, err := handshake(); err != nil || s != "m1" || c != "w1" {
		t.Fatalf("first handshake: server %q client %q, %v", s, c, err)
	}
	if err := server.Set(nodeCreds(t, root, "m2", trust.RoleManager)); err != nil {
		t.Fatal(err)
	}
	if err := client.Set(nodeCreds(t, root, "w1", trust.RoleManager)); err != nil { // promoted
		t.Fatal(err)
	}
	if s, c, err := handshake(); err != nil || s != "m2" || c != "w1" {
		t.Fatalf("after Set: server %q client %q, %v", s, c, err)
	}
	if client.Identity().Role != trust.RoleManager || server.Identity().NodeID != "m2" {
		t.Errorf("identities after Set: %v, %v", client.Identity(), server.Identity())
	}

	// Demoted to worker, the server can no longer answer as a manager.
	if err := server.Set(nodeCreds(t, root, "m2", trust.RoleWorker)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := handshake(); err == nil || !strings.Contains(err.Error(), trust.ManagerServerName) {
		t.Fatalf("handshake with a worker server: %v, want a name mismatch", err)
	}

	// Invalid credentials are refused and the old ones stay.
	bad := nodeCreds(t, newRoot(t, "x"), "evil", trust.RoleManager)
	bad.CACertPEM = root.CertPEM()
	if err := server.Set(bad); err == nil {
		t.Fatal("Set accepted a certificate of another CA")
	}
	if server.Identity().NodeID != "m2" {
		t.Errorf("identity after a failed Set: %v", server.Identity())
	}
	if got := server.Creds(); !bytes.Equal(got.CACertPEM, root.CertPEM()) {
		t.Error("Creds returned other credentials")
	}
}

func TestClientTLSConfigFromCreds(t *testing.T) {
	root := newRoot(t, "c")
	conf, err := trust.ClientTLSConfigFromCreds(adminCreds(t, root), trust.ManagerServerName)
	if err != nil {
		t.Fatal(err)
	}
	if conf.ServerName != trust.ManagerServerName || len(conf.Certificates) != 1 || conf.RootCAs == nil || conf.MinVersion != tls.VersionTLS13 {
		t.Errorf("config %+v", conf)
	}
	if _, err := trust.ClientTLSConfigFromCreds(&trust.Creds{}, "x"); err == nil {
		t.Error("empty credentials accepted")
	}
}
