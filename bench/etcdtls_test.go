package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"slices"
	"testing"
)

// The material -etcd-tls hands to etcd verifies as etcd checks it: each
// member's certificate for its own IP, as a server and as a peer client,
// and the bench's client certificate as a client.
func TestMakeEtcdTLS(t *testing.T) {
	ips := []string{"127.0.0.31", "127.0.0.32"}
	m, err := makeEtcdTLS(t.TempDir(), ips)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(m.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	for _, ip := range ips {
		kp, err := tls.LoadX509KeyPair(m.member[ip][0], m.member[ip][1])
		if err != nil {
			t.Fatalf("%s: %v", ip, err)
		}
		cert, err := x509.ParseCertificate(kp.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		// As a server for its own address; as a peer's client from the
		// address etcd sees on loopback, 127.0.0.1.
		for usage, host := range map[x509.ExtKeyUsage]string{x509.ExtKeyUsageServerAuth: ip, x509.ExtKeyUsageClientAuth: "127.0.0.1"} {
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				t.Errorf("%s, usage %v: %v", ip, usage, err)
			}
			if err := cert.VerifyHostname(host); err != nil {
				t.Errorf("%s: %v", ip, err)
			}
		}
		args := m.args(ip)
		for _, want := range []string{"--client-cert-auth", "--peer-client-cert-auth", m.member[ip][0], m.caFile} {
			if !slices.Contains(args, want) {
				t.Errorf("%s: args %q lack %q", ip, args, want)
			}
		}
	}
	client, err := x509.ParseCertificate(m.client.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
}
