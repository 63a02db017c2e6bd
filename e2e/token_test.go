package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// refusedJoinTimeout bounds how long a refused join may take to give up.
const refusedJoinTimeout = 30 * time.Second

var (
	mentionsCA       = regexp.MustCompile(`(?i)\bCA\b|certificate authority|root cert`)
	mentionsPin      = regexp.MustCompile(`(?i)pin|digest|fingerprint`)
	mentionsToken    = regexp.MustCompile(`(?i)token`)
	mentionsRefusal  = regexp.MustCompile(`(?i)not valid|invalid|refused|denied|rotated|wrong|mismatch|unknown|expired|rejected`)
	mentionsRotation = regexp.MustCompile(`(?i)not valid|invalid|refused|denied|rotated|unknown|expired|rejected`)
)

// TestWrongTokenRefused: a join token whose CA digest is altered, one with a
// wrong secret, and a worker token that was rotated are all refused: the
// join process exits non-zero with a message saying why, and no node is
// added. The rotated-in token then works (so the refusals are the tokens'
// fault, not the network's).
func TestWrongTokenRefused(t *testing.T) {
	c := newCluster(t, 1, 0)
	h1 := c.hosts[0]
	good, err := harness.ParseToken(c.workerToken)
	if err != nil {
		t.Fatal(err)
	}

	refused := func(h *harness.Host, token string, why string, must ...*regexp.Regexp) {
		t.Helper()
		p := h.Join(t, token, h1.Addr())
		code, err := p.WaitExit(refusedJoinTimeout)
		if err != nil {
			t.Errorf("join with %s: %v (the join was not refused)", why, err)
			return
		}
		out := p.Output()
		if code == 0 {
			t.Errorf("join with %s exited 0; output:\n%s", why, out)
		}
		for _, re := range must {
			if !re.MatchString(out) {
				t.Errorf("join with %s: output does not match %q:\n%s", why, re, out)
			}
		}
		if _, err := os.Stat(filepath.Join(h.DataDir, "node.json")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("join with %s left %s/node.json (%v)", why, h.DataDir, err)
		}
		t.Logf("join with %s: exit %d, tail:\n%s", why, code, p.Tail(3))
	}

	// 1. The CA digest altered: the joiner must refuse the manager's CA.
	badDigest := good
	if badDigest.Digest, err = harness.Mutate(good.Digest); err != nil {
		t.Fatal(err)
	}
	refused(c.addHost(), badDigest.String(), "an altered CA digest", mentionsCA, mentionsPin)

	// 2. The right CA, a wrong secret.
	badSecret := good
	if badSecret.Secret, err = harness.Mutate(good.Secret); err != nil {
		t.Fatal(err)
	}
	refused(c.addHost(), badSecret.String(), "a wrong secret", mentionsToken, mentionsRefusal)

	// 3. Rotate the worker token; the old one stops working at once.
	oldToken := c.workerToken
	var newToken string
	{
		ctx, cancel := attempt()
		_, err := h1.Local().Run(ctx, "token", "rotate", "worker")
		if err == nil {
			newToken, err = c.token(ctx, h1.Local(), "worker")
		}
		cancel()
		if err != nil {
			t.Fatalf("token rotate: %v", err)
		}
	}
	if newToken == oldToken {
		t.Fatalf("token rotate worker: token unchanged (%s)", newToken)
	}
	refused(c.addHost(), oldToken, "a rotated worker token", mentionsToken, mentionsRotation)

	// The new token admits a worker.
	ok := c.addHost()
	c.join(ok, newToken, shoalv1.NodeRole_NODE_ROLE_WORKER)

	// Only h1 and that worker are nodes.
	c.waitNodes(h1, func(nodes []*shoalv1.Node) error {
		if len(nodes) != 2 {
			return fmt.Errorf("%d nodes, want 2 (h1 and %s)", len(nodes), ok)
		}
		return nil
	})
}
