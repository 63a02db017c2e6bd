package e2e

import (
	"regexp"
	"testing"
)

var errorLine = regexp.MustCompile(`(level=ERROR|\[ERROR\])[^\n]*`)

// TestCleanStopLogsNoError: stopping every node of a three-manager cluster
// with SIGTERM, the managers one after another, is a clean stop: each
// process exits 0 and logs no ERROR (raft's transport used to log
// "failed to accept connection" when the shared port closed before raft
// had shut down).
func TestCleanStopLogsNoError(t *testing.T) {
	c := newCluster(t, 3, 1)
	for _, h := range c.hosts {
		p := procOf(t, h)
		if err := p.Stop(); err != nil {
			t.Errorf("stopping %s: %v", h, err)
			continue
		}
		if code := p.ExitCode(); code != 0 {
			t.Errorf("%s exited %d after SIGTERM; tail:\n%s", h, code, p.Tail(20))
		}
		if errs := errorLine.FindAllString(p.Output(), -1); len(errs) > 0 {
			t.Errorf("%s logged %d ERROR lines on a clean run and stop, first: %s", h, len(errs), errs[0])
		}
	}
}
