package controlapi

import (
	"context"
	"fmt"
	"github.com/shoal-dev/shoal/errdefs"
	"regexp"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

// Admin certificates are objects: the cluster lists every one it issued
// (by name and serial), and the authorizer honours an admin certificate
// only while it is listed and not revoked. The private key never reaches
// a manager: the caller sends a CSR.

const (
	// DefaultAdminCertTTL is an admin certificate's lifetime unless the
	// caller asks for another.
	DefaultAdminCertTTL = 365 * 24 * time.Hour
	// MinAdminCertTTL and MaxAdminCertTTL bound ttl_ms.
	MinAdminCertTTL = time.Minute
	MaxAdminCertTTL = 10 * 365 * 24 * time.Hour
	// MaxAdminCerts bounds the list kept in the cluster object (expired
	// entries are dropped first: TLS refuses their certificates anyway).
	MaxAdminCerts = 1000
)

// adminNameRE: names end up as file names (`admin-cert create --out`).
var adminNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// CreateAdminCertificate signs an admin certificate for the caller's CSR
// and records it. A name is unique among the certificates not revoked.
func (s *Server) CreateAdminCertificate(ctx context.Context, req *shoalv1.CreateAdminCertificateRequest) (*shoalv1.CreateAdminCertificateResponse, error) {
	name := req.GetName()
	if !adminNameRE.MatchString(name) {
		return nil, errdefs.InvalidArgumentf("name: %q is not a valid admin certificate name (letters, digits, '_', '.', '-'; at most 63; starting with a letter or digit)", name)
	}
	ttl := DefaultAdminCertTTL
	if ms := req.GetTtlMs(); ms != 0 {
		ttl = time.Duration(ms) * time.Millisecond
		if ms < 0 || ttl < MinAdminCertTTL || ttl > MaxAdminCertTTL {
			return nil, errdefs.InvalidArgumentf("ttl_ms: %d is out of range (%s to %s)", ms, MinAdminCertTTL, MaxAdminCertTTL)
		}
	}
	if len(req.GetCsrPem()) == 0 {
		return nil, errdefs.InvalidArgumentf("csr_pem: required (the private key stays with the caller)")
	}
	var resp *shoalv1.CreateAdminCertificateResponse
	_, err := s.store.Update(ctx, func(tx raftstore.WriteTx) error {
		c, err := clusterOf(tx)
		if err != nil {
			return err
		}
		now := time.Now()
		var keep []*shoalv1.AdminCertificate
		for _, a := range c.GetAdminCerts() {
			if a.GetNotAfter() != nil && now.After(a.GetNotAfter().AsTime()) {
				continue
			}
			if a.GetName() == name && !a.GetRevoked() {
				return fmt.Errorf("admin certificate %q (revoke it first, or choose another name): %w", name, raftstore.ErrExists)
			}
			keep = append(keep, a)
		}
		if len(keep) >= MaxAdminCerts {
			return errdefs.FailedPreconditionf("the cluster already lists %d admin certificates, the most it keeps", len(keep))
		}
		root, err := trust.LoadCA(c.GetCaCertPem(), c.GetCaKeyPem())
		if err != nil {
			return err
		}
		certPEM, _, err := root.SignAdminCSR(req.GetCsrPem(), name, ttl)
		if err != nil {
			return errdefs.InvalidArgumentf("csr_pem: %v", err)
		}
		obj, err := trust.AdminCertificateOf(certPEM)
		if err != nil {
			return err
		}
		c = proto.Clone(c).(*shoalv1.Cluster)
		c.AdminCerts = append(keep, obj)
		resp = &shoalv1.CreateAdminCertificateResponse{Admin: obj, CertPem: certPEM, CaCertPem: c.GetCaCertPem()}
		return tx.Update(c)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("admin certificate created", "name", name, "serial", resp.GetAdmin().GetSerial(), "not_after", resp.GetAdmin().GetNotAfter().AsTime())
	return resp, nil
}

// ListAdminCertificates lists the admin certificates, revoked ones too.
// Workers may call it: their agent APIs check admin callers with it.
func (s *Server) ListAdminCertificates(ctx context.Context, _ *shoalv1.ListAdminCertificatesRequest) (*shoalv1.ListAdminCertificatesResponse, error) {
	r, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	c, err := clusterOf(r)
	if err != nil {
		return nil, err
	}
	return &shoalv1.ListAdminCertificatesResponse{Admins: c.GetAdminCerts()}, nil
}

// RevokeAdminCertificate revokes the admin certificate named name (the
// one not revoked yet). Every manager refuses it from the moment the
// change reaches its store. Refusing to revoke the last usable one is the
// CLI's (`--force`): the request has no such switch, and an operator
// holding the CA key can always issue another.
func (s *Server) RevokeAdminCertificate(ctx context.Context, req *shoalv1.RevokeAdminCertificateRequest) (*shoalv1.RevokeAdminCertificateResponse, error) {
	name := req.GetName()
	if name == "" {
		return nil, errdefs.InvalidArgumentf("name: required")
	}
	var out *shoalv1.AdminCertificate
	_, err := s.store.Update(ctx, func(tx raftstore.WriteTx) error {
		c, err := clusterOf(tx)
		if err != nil {
			return err
		}
		c = proto.Clone(c).(*shoalv1.Cluster)
		for _, a := range c.GetAdminCerts() {
			if a.GetName() == name && !a.GetRevoked() {
				a.Revoked, a.RevokedAt = true, timestamppb.Now()
				out = a
				return tx.Update(c)
			}
		}
		return notFound("admin certificate", name)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("admin certificate revoked", "name", name, "serial", out.GetSerial())
	return &shoalv1.RevokeAdminCertificateResponse{Admin: out}, nil
}
