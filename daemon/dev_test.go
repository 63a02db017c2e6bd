package daemon

import (
	"strings"
	"testing"
)

// TestDevHintText: the hint `shoal dev` prints shows how to try a bridge
// network and curls the host-mode port on the gateway of the node's own
// task bridge (default or --bridge-subnet), not on 127.0.0.1.
func TestDevHintText(t *testing.T) {
	for _, tc := range []struct {
		subnet, want string
	}{
		{"", "curl http://10.213.0.1:9090/"},
		{"10.213.7.0/24", "curl http://10.213.7.1:9090/"},
		{"10.40.0.9/16", "curl http://10.40.0.1:9090/"},
	} {
		s := devHintText("/tmp/d", "/x/shoal", tc.subnet)
		for _, w := range []string{tc.want, "export SHOAL_DATA_DIR=/tmp/d",
			"/x/shoal network create --driver bridge", "fetch http://api:8080/"} {
			if !strings.Contains(s, w) {
				t.Errorf("subnet %q: hint lacks %q:\n%s", tc.subnet, w, s)
			}
		}
		if strings.Contains(s, "%!") {
			t.Errorf("subnet %q: bad format verbs:\n%s", tc.subnet, s)
		}
	}
}
