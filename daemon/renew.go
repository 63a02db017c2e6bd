package daemon

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/shoal-dev/shoal/datadir"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

// Certificates renew themselves: the role loop (node.go) renews the node's
// certificate at two thirds of its lifetime (trust.RenewAt), at start when it
// is already past that point, and with proof of the old key when it has
// expired (the node was off). A renewal that fails is retried with back-off
// for the last third of the lifetime. The new certificate is used by every
// new connection at once (trust.CertStore); nothing restarts.

// Renewal retry back-off.
const (
	renewRetryMin = time.Second
	renewRetryMax = 30 * time.Second
)

// renewDue is when the current certificate is to be renewed.
func (n *node) renewDue() time.Time { return trust.RenewAt(n.certs.Leaf()) }

// renewCert asks the managers (leader first; only the leader issues, the
// others answer UNAVAILABLE) for a certificate with the role the cluster
// wants for this node, saves it, swaps it in and applies a role change.
func (n *node) renewCert(ctx context.Context) error {
	keyPEM, csrPEM, err := trust.NewKeyAndCSR()
	if err != nil {
		return err
	}
	req := &shoalv1.RenewNodeCertificateRequest{CsrPem: csrPEM}
	creds := trust.ClientCreds(n.certs)
	if leaf := n.certs.Leaf(); time.Now().After(leaf.NotAfter) {
		// TLS refuses an expired certificate: connect without one and
		// prove possession of the old key instead.
		cur := n.certs.Creds()
		sig, err := trust.SignRenewalProof(cur.KeyPEM, csrPEM)
		if err != nil {
			return err
		}
		req.OldCertPem, req.OldKeySignature = cur.CertPEM, sig
		conf := n.certs.ClientTLSConfig(trust.ManagerServerName, trust.ALPNGRPC)
		conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
		creds = credentials.NewTLS(conf)
		n.log.Warn("the node certificate has expired; renewing it with proof of the old key", "not_after", leaf.NotAfter)
	}
	var resp *shoalv1.IssueNodeCertificateResponse
	var lastErr error
	st := n.state()
	for _, addr := range append(st.Managers, st.AdvertiseAddr) {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			lastErr = err
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		resp, err = shoalv1.NewNodeCAClient(conn).RenewNodeCertificate(cctx, req)
		cancel()
		conn.Close()
		if err == nil {
			break
		}
		lastErr = fmt.Errorf("%s: %w", addr, err)
	}
	if resp == nil {
		return fmt.Errorf("renewing the certificate: %w", lastErr)
	}
	newCreds := &trust.Creds{CACertPEM: resp.GetCaCertPem(), CertPEM: resp.GetCertPem(), KeyPEM: keyPEM}
	if err := trust.SaveCreds(datadir.Dir(n.o.DataDir).Certs(), "node", newCreds); err != nil {
		return err
	}
	oldRole := n.certs.Identity().Role
	if err := n.certs.Set(newCreds); err != nil {
		return err
	}
	role := trust.RoleFromProto(resp.GetRole())
	n.log.Info("renewed this node's certificate", "role", string(role), "not_after", n.certs.Leaf().NotAfter, "renew_at", n.renewDue())
	if role == oldRole {
		return nil
	}
	n.mu.Lock()
	n.st.Role = string(role)
	err = n.st.Save(n.o.DataDir)
	n.mu.Unlock()
	if err != nil {
		return err
	}
	n.log.Info("role changed", "role", string(role))
	if role == trust.RoleManager {
		return n.startManager(ctx)
	}
	if err := n.stopManager(); err != nil {
		n.log.Warn("stopping the manager after demotion", "err", err)
	}
	// A demoted node leaves raft; its old log must not come back if it is
	// promoted again later.
	return os.RemoveAll(datadir.Dir(n.o.DataDir).Raft())
}

// watchCertExpiry runs on managers, which hold the cluster object: when
// `cluster update --cert-expiry` lowers the lifetime below what is left of
// this node's certificate, the node renews now instead of in (say) 60 days
// — an operator shortening lifetimes wants them short. Workers, which have
// no store, pick the new lifetime up at their next renewal.
func (n *node) watchCertExpiry(ctx context.Context, store *raftstore.Store) {
	sub, err := store.Watch(ctx, 0, raftstore.KindCluster)
	if err != nil {
		return
	}
	defer func() { sub.Close() }()
	for {
		if c, ok := raftstore.ClusterOf(store.View()); ok {
			if ms := c.GetSettings().GetNodeCertExpiryMs(); ms > 0 {
				ttl := time.Duration(ms) * time.Millisecond
				// Slack for the time a renewal takes to arrive.
				if left := time.Until(n.certs.Leaf().NotAfter); left > ttl+ttl/10+time.Second {
					n.log.Info("the cluster's certificate lifetime is shorter than what is left of this node's certificate; renewing", "lifetime", ttl, "left", left.Round(time.Second))
					select {
					case n.renewCh <- struct{}{}:
					default:
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case _, ok := <-sub.C():
			if !ok {
				if ctx.Err() != nil {
					return
				}
				sub.Close()
				if sub, err = store.Watch(ctx, 0, raftstore.KindCluster); err != nil {
					return
				}
			}
		case <-n.certs.Changed():
		}
	}
}
