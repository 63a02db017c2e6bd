// Package harness runs multi-host tests on one machine: every "host" is a
// network namespace with its own address, wired to a bridge that lives in a
// "switch" namespace of the test's own, and runs real shoal processes.
//
// A test builds a Fabric, adds hosts and starts processes in them:
//
//	f := harness.NewFabric(t)              // switch netns shl-sw-<id> + bridge
//	h1, h2 := f.AddHost("h1"), f.AddHost("h2") // 192.168.250.11, .12 (/24)
//	p := h1.Init(t)                        // shoal init --data-dir … --advertise-addr 192.168.250.11
//	out, err := h1.Shoal(t, "node", "ls")  // shoal --data-dir … node ls, inside h1's namespace
//	nodes, err := harness.List[shoalv1.Node](ctx, h1.Local(), "node", "ls")
//	harness.Eventually(t, 30*time.Second, 200*time.Millisecond, func() error { … })
//	h2.PowerOff()                          // kill -9 everything on h2 + link down
//
// Faults: Proc.Kill (kill -9), Proc.Stop (SIGTERM, then SIGKILL after a
// grace period), Host.LinkDown/LinkUp (the host's bridge port: a partition
// from every other host), Host.PowerOff/PowerOn, Host.Restart (crash, then
// `shoal daemon` from the data dir).
//
// Isolation and cleanup. Only addresses of 192.168.250.0/24 inside the
// fabric's namespaces and loopback are used; the root namespace's
// interfaces and routes are never touched (veths are created inside the
// switch namespace with their peer placed directly into the host's). Every
// client command also runs inside a host namespace, never in the test
// process. t.Cleanup kills all processes, then deletes the namespaces
// (which deletes the veths); on failure it first prints the tail of every
// process log and of each host's CLI log. Processes get SIGKILL when the
// test binary dies (Pdeathsig). Each live fabric holds an flock on
// /run/shoal-e2e/<id>.lock, so Sweep — run by Main before the tests —
// removes only namespaces (prefix "shl-") whose owner died: a crashed run
// never poisons the next one, and two test binaries can run side by side.
//
// The shoal binary is built once per test binary run from ./cmd/shoal of
// the module found by `go env GOMOD` (CGO allowed; build tags from
// $SHOAL_E2E_GOTAGS), or taken from $SHOAL_E2E_BINARY.
//
// Synchronisation is by polling an observable condition with a deadline
// (Eventually in the test goroutine, Poll elsewhere) — never a bare sleep.
//
// Running. The tests need root, iproute2 (`ip`) and iputils-ping (for this
// package's self-test); scripts/setup.sh installs both. As root:
//
//	go test ./e2e/harness/     # the harness's own test; needs no shoal
//	go test ./e2e/...          # plus the shoal scenarios
//
// Without root the tests fail (they never skip: a skipped e2e test must not
// count as a pass). A package using the harness should have
//
//	func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
package harness
