package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// etcdTLS is the key material of an etcd cluster run with mutual TLS on
// client and peer URLs (-etcd-tls), so that the reference pays for TLS as
// shoal does (shoal's API and raft traffic are mTLS, always): a throwaway
// CA, a certificate per member (server and client use, its IP and 127.0.0.1 as
// SANs) and
// a client certificate for the benchmark's client. ECDSA P-256, as shoal's.
type etcdTLS struct {
	caFile string
	// member[ip] is the cert and key file of the member on ip.
	member map[string][2]string
	client *tls.Config
}

// makeEtcdTLS writes the CA and the member certificates into dir and
// returns them with the client's TLS config.
func makeEtcdTLS(dir string, ips []string) (*etcdTLS, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "shoal-bench etcd CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	out := &etcdTLS{caFile: filepath.Join(dir, "ca.pem"), member: map[string][2]string{}}
	if err := writePEM(out.caFile, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	issue := func(serial int64, name string, ip net.IP) (certDER []byte, key *ecdsa.PrivateKey, err error) {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		if ip != nil {
			// etcd checks a peer's client certificate against the address
			// the connection comes from, and on loopback a member dials
			// from 127.0.0.1, not from its own address.
			tmpl.IPAddresses = []net.IP{ip, net.IPv4(127, 0, 0, 1)}
		}
		certDER, err = x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		return certDER, key, err
	}
	for i, ipStr := range ips {
		ip := net.ParseIP(ipStr)
		if ip == nil {
			return nil, fmt.Errorf("etcd TLS: %q is not an IP address", ipStr)
		}
		der, key, err := issue(int64(i+2), "etcd-"+ipStr, ip)
		if err != nil {
			return nil, err
		}
		certFile, keyFile := filepath.Join(dir, ipStr+".pem"), filepath.Join(dir, ipStr+"-key.pem")
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, err
		}
		if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
			return nil, err
		}
		if err := writePEM(keyFile, "EC PRIVATE KEY", keyDER); err != nil {
			return nil, err
		}
		out.member[ipStr] = [2]string{certFile, keyFile}
	}
	der, key, err := issue(int64(len(ips)+2), "bench-client", nil)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	out.client = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		RootCAs:      pool, MinVersion: tls.VersionTLS12,
	}
	return out, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// args are the etcd flags for the member on ip.
func (t *etcdTLS) args(ip string) []string {
	m := t.member[ip]
	return []string{
		"--cert-file", m[0], "--key-file", m[1], "--client-cert-auth", "--trusted-ca-file", t.caFile,
		"--peer-cert-file", m[0], "--peer-key-file", m[1], "--peer-client-cert-auth", "--peer-trusted-ca-file", t.caFile,
	}
}
