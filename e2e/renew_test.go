package e2e

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

const (
	// shortCertExpiry is the certificate lifetime of the renewal test:
	// nodes renew every two thirds of it.
	shortCertExpiry = 20 * time.Second
	// renewalsWanted in a row, on every node.
	renewalsWanted = 5
)

var (
	renewedLine   = regexp.MustCompile(`msg="renewed this node's certificate"`)
	candidateLine = regexp.MustCompile(`msg="entering candidate state"[^\n]*term=(\d+)`)
)

// procOf is the host's running shoal node.
func procOf(t *testing.T, h *harness.Host) *harness.Proc {
	t.Helper()
	ps := h.Running()
	if len(ps) != 1 {
		t.Fatalf("%s runs %d processes, want its one shoal node", h, len(ps))
	}
	return ps[0]
}

// certLifetime reads the lifetime of h's current node certificate.
func certLifetime(h *harness.Host) (time.Duration, error) {
	creds, err := trust.LoadCreds(h.NodeCertDir(), "node")
	if err != nil {
		return 0, err
	}
	leaf, err := trust.ParseCertPEM(creds.CertPEM)
	if err != nil {
		return 0, err
	}
	return leaf.NotAfter.Sub(trust.IssuedAt(leaf)), nil
}

// TestCertificatesRenewThemselves: with a 20 s certificate lifetime
// (`cluster update --cert-expiry 20s`), every node renews its certificate
// five times in a row while the cluster keeps taking writes through every
// manager, every node stays READY (its session holds), and no election
// happens (no manager enters the candidate state: a raft term only grows
// through one).
func TestCertificatesRenewThemselves(t *testing.T) {
	c := newCluster(t, 3, 0)
	h1 := c.hosts[0]
	ctx, cancel := attempt()
	out, err := c.admin(h1).Run(ctx, "cluster", "update", "--cert-expiry", shortCertExpiry.String())
	cancel()
	if err != nil {
		t.Fatalf("cluster update --cert-expiry: %v\n%s", err, out)
	}
	// Managers renew at once for the shorter lifetime; a worker joining
	// now gets it from the start.
	c.join(c.addHost(), c.workerToken, shoalv1.NodeRole_NODE_ROLE_WORKER)
	harness.Eventually(t, settleTimeout, poll, func() error {
		for _, h := range c.hosts {
			d, err := certLifetime(h)
			if err != nil {
				return err
			}
			if d > shortCertExpiry+time.Second {
				return fmt.Errorf("%s's certificate lives %v, want %v", h, d, shortCertExpiry)
			}
		}
		return nil
	})
	start := map[*harness.Host]int{}
	candidates := map[*harness.Host]int{}
	for _, h := range c.hosts {
		p := procOf(t, h)
		start[h] = len(renewedLine.FindAllString(p.Output(), -1))
		candidates[h] = len(candidateLine.FindAllString(p.Output(), -1))
	}
	// h1 bootstrapped raft by winning the first election: its log shows
	// what an election looks like, so counting none later means something.
	if candidates[h1] == 0 {
		t.Fatalf("%s's log has no %q line from its first election; the election check would be blind", h1, candidateLine)
	}
	errorLines := errorLine
	errorsBefore := map[*harness.Host]int{}
	for _, h := range c.hosts {
		errorsBefore[h] = len(errorLines.FindAllString(procOf(t, h).Output(), -1))
	}
	began := time.Now()

	// Until every node has renewed five more times: a write through each
	// manager in turn, and every node READY, each round.
	writes := 0
	deadline := time.Duration(renewalsWanted+3) * shortCertExpiry * 2 / 3 * 3 // generous on a loaded machine
	pollCtx, cancelPoll := context.WithTimeout(context.Background(), deadline)
	defer cancelPoll()
	err = harness.Poll(pollCtx, time.Second, func() error {
		via := c.managers[writes%len(c.managers)]
		ctx, cancel := attempt()
		defer cancel()
		name := fmt.Sprintf("renewal-write-%d", writes)
		if err := createService(ctx, c.admin(via), name, 0); err != nil {
			var ee *harness.ExecError
			if !errors.As(err, &ee) || !alreadyExists.MatchString(ee.Stderr+ee.Stdout) {
				return harness.Permanent(fmt.Errorf("write %d through %s during renewals: %w", writes, via, err))
			}
		}
		writes++
		nodes, err := c.nodes(ctx, via)
		if err != nil {
			return harness.Permanent(fmt.Errorf("node ls through %s during renewals: %w", via, err))
		}
		for _, h := range c.hosts {
			if n := findNode(nodes, c.id(h)); n.GetStatus().GetState() != shoalv1.NodeState_NODE_STATE_READY {
				return harness.Permanent(fmt.Errorf("%s is %s during renewals (its session broke)", h, n.GetStatus().GetState()))
			}
		}
		for _, h := range c.hosts {
			if n := len(renewedLine.FindAllString(procOf(t, h).Output(), -1)) - start[h]; n < renewalsWanted {
				return fmt.Errorf("%s renewed %d times so far, want %d", h, n, renewalsWanted)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d renewals on each of %d nodes in %v with %d writes through every manager in turn",
		renewalsWanted, len(c.hosts), time.Since(began).Round(time.Second), writes)
	for _, h := range c.hosts {
		if all := errorLines.FindAllString(procOf(t, h).Output(), -1); len(all) > errorsBefore[h] {
			t.Logf("%s logged %d ERROR lines during the renewals, e.g. %s", h, len(all)-errorsBefore[h], all[errorsBefore[h]])
		}
	}
	for _, h := range c.managers {
		if got := candidateLine.FindAllStringSubmatch(procOf(t, h).Output(), -1); len(got) != candidates[h] {
			t.Errorf("%s entered the candidate state %d times during the renewals (terms %v): an election", h, len(got)-candidates[h], got[candidates[h]:])
		}
	}
}

// TestExpiredCertificateRenewsAtStart: a worker that was stopped until its
// certificate expired renews it at start with proof of the old key (it
// cannot present the expired certificate) and is READY again.
func TestExpiredCertificateRenewsAtStart(t *testing.T) {
	c := newCluster(t, 1, 0)
	h1 := c.hosts[0]
	ctx, cancel := attempt()
	out, err := c.admin(h1).Run(ctx, "cluster", "update", "--cert-expiry", shortCertExpiry.String())
	cancel()
	if err != nil {
		t.Fatalf("cluster update --cert-expiry: %v\n%s", err, out)
	}
	c.join(c.addHost(), c.workerToken, shoalv1.NodeRole_NODE_ROLE_WORKER)
	w := c.workers[0]
	if err := procOf(t, w).Stop(); err != nil {
		t.Fatal(err)
	}
	creds, err := trust.LoadCreds(w.NodeCertDir(), "node")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := trust.ParseCertPEM(creds.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	// The certificate's expiry is the event waited for.
	harness.Eventually(t, 2*shortCertExpiry+settleTimeout, poll, func() error {
		if left := time.Until(leaf.NotAfter); left > -time.Second {
			return fmt.Errorf("%s's certificate expires in %v", w, left)
		}
		return nil
	})
	p := w.Daemon(t)
	harness.Eventually(t, settleTimeout, poll, func() error {
		_, err := p.Match(regexp.MustCompile(`renewing it with proof of the old key[^\n]*\n(.*\n)*.*` + renewedLine.String()))
		return err
	})
	c.waitNodes(h1, func(nodes []*shoalv1.Node) error {
		if err := p.CheckRunning(); err != nil {
			return err
		}
		return c.nodeReady(nodes, w, shoalv1.NodeRole_NODE_ROLE_WORKER)
	})
	after, err := trust.LoadCreds(w.NodeCertDir(), "node")
	if err != nil {
		t.Fatal(err)
	}
	if now, _ := after.NotAfter(); !now.After(time.Now()) {
		t.Fatalf("%s's certificate still expired (not after %v)", w, now)
	}
}
