// Package harness runs multi-host tests on one machine: every "host" is a
// network namespace with its own address, wired to a bridge that lives in a
// "switch" namespace of the test's own, and runs real shoal processes.
//
// A test builds a Fabric, adds hosts and starts processes in them:
//
//	f := harness.NewFabric(t)              // switch netns shl-sw-<id> + bridge
//	h1, h2 := f.AddHost("h1"), f.AddHost("h2") // 192.168.250.11, .12 (/24)
//	p := h1.Init(t)                        // shoal init --data-dir … --advertise-addr 192.168.250.11 --cgroup-parent … --load-image demo.oci.tar
//	out, err := h1.Shoal(t, "node", "ls")  // shoal --data-dir … node ls, inside h1's namespace
//	nodes, err := harness.List[shoalv1.Node](ctx, h1.Local(), "node", "ls")
//	tasks := harness.WaitRunning(t, h1.Local(), "web", 3, time.Minute)
//	harness.Eventually(t, 30*time.Second, 200*time.Millisecond, func() error { … })
//	h2.PowerOff()                          // kill -9 everything on h2, containers too, + link down
//
// Processes run in a host's network namespace only (`nsenter --net`, not
// `ip netns exec`, whose private /sys hides /sys/fs/cgroup so no container
// could be made): they share the test's mount namespace, so what a node
// mounts (container rootfs overlays, task netns bind mounts under its data
// dir) is visible to the test and cleaned up by it.
//
// Containers. Init, Join and Daemon add NodeFlags: the host's own cgroup
// parent (/shoal-e2e-<fabric id>-<host>: Host.CgroupPids, CgroupDirs find
// its containers) and --load-image of the demo image (DemoImage:
// ./cmd/shoal-demo packaged by ./cmd/shoal-mkimage as demo:latest, built
// once per test binary; BuildImage makes variants). Host.Mounts lists what
// is mounted under the host's directory. Go code of the test can reach a
// host's addresses (its node bridge and the task addresses behind it)
// through Host.DialContext / HTTPClient, which dial from inside the host's
// namespace. Host.StartRegistry runs Debian's docker-registry on a host and
// Registry.Push uploads an OCI layout to it.
//
// Faults: Proc.Kill (kill -9), Proc.Stop (SIGTERM, then SIGKILL after a
// grace period), Host.LinkDown/LinkUp (the host's bridge port: a partition
// from every other host), Host.Crash (kill -9 of the harness's processes —
// the shoal node — while containers and their shims, which run in sessions
// of their own, live on, as after an agent crash), Host.Restart (Crash,
// then `shoal daemon` from the data dir), Host.PowerOff (a power cut:
// Crash, then every other process in the host's namespace and cgroups is
// killed, its mounts, cgroups and interfaces other than eth0 go, as a
// reboot loses them, and its link goes down; the data dir stays) and
// PowerOn (link up, `shoal daemon`).
//
// Isolation and cleanup. Only addresses of 192.168.250.0/24 inside the
// fabric's namespaces, the nodes' task bridges inside them, and loopback
// are used; the root namespace's interfaces and routes are never touched
// (veths are created inside the switch namespace with their peer placed
// directly into the host's). Every client command also runs inside a host
// namespace. t.Cleanup, whether the test passed or not, kills every
// process the hosts started, then everything else in their namespaces
// (shims) and in their cgroups (containers outlive a killed node), prints
// the tail of every process log and of each host's CLI log if the test
// failed, unmounts everything below the fabric's directory (deepest first,
// lazily), removes the hosts' cgroups (children first) and deletes the
// namespaces (which deletes the veths). Processes get SIGKILL when the
// test binary dies (Pdeathsig). Each live fabric holds an flock on
// /run/shoal-e2e/<id>.lock (which names its directory), so Sweep — run by
// Main before the tests — cleans up only after fabrics whose owner died:
// their namespaces (prefix "shl-"), cgroups (prefix "shoal-e2e-") and
// mounts. A crashed run never poisons the next one, and two test binaries
// can run side by side.
//
// The shoal binary is built once per test binary run from ./cmd/shoal of
// the module found by `go env GOMOD` (CGO allowed; build tags from
// $SHOAL_E2E_GOTAGS and $GOFLAGS: containers need -tags=seccomp), or taken
// from $SHOAL_E2E_BINARY; Main removes what it built.
//
// Synchronisation is by polling an observable condition with a deadline
// (Eventually in the test goroutine, Poll elsewhere) — never a bare sleep.
//
// Running. The tests need root, iproute2 (`ip`), util-linux (`nsenter`),
// iputils-ping (for this package's self-test) and docker-registry (for the
// registry tests); scripts/setup.sh installs them. As root:
//
//	go test ./e2e/harness/     # the harness's own test; needs no shoal
//	go test ./e2e/...          # plus the shoal scenarios
//
// Without root the tests fail (they never skip: a skipped e2e test must not
// count as a pass). A package using the harness should have
//
//	func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
package harness
