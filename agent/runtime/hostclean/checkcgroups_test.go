package hostclean

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// cgcheckHelperEnv makes the test binary run CheckCgroups and print its
// result instead of the tests (TestMain), so that the check can run
// where an operator would run a node: under `ip netns exec`.
const cgcheckHelperEnv = "SHOAL_HOSTCLEAN_CGCHECK_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(cgcheckHelperEnv) == "1" {
		if err := CheckCgroups(); err != nil {
			fmt.Println("ERR:", err)
		} else {
			fmt.Println("OK")
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestCheckCgroupsExplainsIPNetnsExec reproduces the operator's mistake:
// the same binary passes the check in the host's mount namespace and,
// started with `ip netns exec`, is told why tasks cannot run and what to
// do instead.
func TestCheckCgroupsExplainsIPNetnsExec(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (ip netns): run the suite as root, as CI does")
	}
	if err := CheckCgroups(); err != nil {
		t.Fatalf("host mount namespace: %v", err)
	}
	ns := fmt.Sprintf("shoal-cgcheck-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del: %v: %s", err, out)
		}
	})
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0])
	cmd.Env = append(os.Environ(), cgcheckHelperEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper under ip netns exec: %v: %s", err, out)
	}
	got := string(out)
	if !strings.HasPrefix(got, "ERR:") || !strings.Contains(got, "nsenter --net=") || !strings.Contains(got, "ip netns exec") {
		t.Fatalf("under ip netns exec the check said %q; want an error naming ip netns exec and nsenter --net=", got)
	}
}
