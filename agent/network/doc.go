// Package network is the agent's node-local task network: it gives every
// task its own network namespace, attached to a per-node bridge, so that
// the tasks of one node reach each other and the node reaches them (an
// operator can `curl http://<task ip>:8080/` on the node). Overlay
// networks between nodes come later; they will be added beside this,
// not instead of it.
//
// # Use
//
//	m, err := network.New(network.Config{StateDir: "/var/lib/shoal/network", Logger: log})
//	att, err := m.Setup(ctx, taskID)   // att.NetNSPath goes to the runtime (runtime.Spec.NetNSPath)
//	...
//	err = m.Teardown(ctx, taskID)      // after the container is gone
//	ids := m.List()                    // after a restart: tear down the ones no task owns
//	m.Close()                          // leaves bridge and attachments in place
//
// Setup and Teardown are idempotent and safe to call from many
// goroutines; calls for one task id are serialised.
//
// # What Setup builds
//
// In the namespace New was called in (the "host": the node, or an e2e
// host made with `ip netns exec`; never /proc/1's):
//
//   - a bridge (default "shoal0") with the subnet's first host address
//     as gateway (default 10.213.0.1/24), created once and adopted by
//     later Managers; its MAC is set explicitly, so that it does not
//     follow its ports and invalidate the tasks' ARP entries;
//   - per task, the host end of a veth pair, named "sh" + 12 hex digits
//     of sha256(task id) (deterministic, so nothing else needs to be
//     recorded), a port of the bridge.
//
// In the task's namespace, bind-mounted at <StateDir>/netns/<task id> so
// that it lives without a process: lo up; eth0 (the veth's other end)
// with the MTU, a MAC derived from the address (02:53:a.b.c.d), the
// address and a default route via the gateway. There is no NAT and no
// forwarding: host sysctls are not touched.
//
// Setup returns only when the kernel's linkwatch has processed the new
// link state (host veth and bridge operationally up, bridge port
// enabled): otherwise about one in three fresh tasks lost its first
// packets and was reached only after a 1 s retry.
//
// # Addresses
//
// The IPAM table (task id → address) is kept in <StateDir>/ipam.json,
// replaced atomically (temp file, fsync, rename, fsync of the dir) on
// every change. The network, gateway and broadcast addresses are never
// handed out; addresses are allocated next-fit, so a freed one is reused
// last. One goroutine owns the table and applies requests that queue up
// together with one write (group commit). A full subnet is an
// [ErrSubnetExhausted] error naming the subnet and task.
//
// # Failure and restart
//
// A Setup that fails half-way removes what it made (and only that: a
// failed repair of a working attachment leaves it alone). A restarted
// agent's Setup of an existing task checks each piece and repairs what
// is missing, keeping a live namespace (the container may be in it). If
// the netns file is no longer a mount (the agent's mount namespace is
// gone, as with `ip netns exec`, or the node rebooted), Setup finds the
// old namespace through a process still in it, via the peer namespace id
// of the task's veth, and mounts it again; failing that it builds a new
// namespace with the same address. New removes netns files and bridge
// veths of tasks that hold no address (leftovers of a crash). Before
// that it claims the bridge (owner_linux.go: its alias names the node's
// state dir): a bridge another node on the machine owns, whose state dir
// still exists and whose task ports are still attached, is refused
// (ErrFailedPrecondition, "give each node … --bridge"), since those ports
// are that node's live tasks, not leftovers. The state dir is compared as
// a directory (absolute, symlinks resolved; os.SameFile), so a node
// restarted with its dir spelled another way still owns its bridge.
//
// # Teardown
//
// Teardown deletes the veth pair, unmounts and removes the netns file,
// then frees the address (only when the rest worked, so a failed
// Teardown leaves the task in List for a retry). Deleting a network
// device costs RCU grace periods (~20 ms here), so veths that are torn
// down concurrently are deleted together: put into one netdev group and
// removed with a single RTM_DELLINK for the group (100 Teardowns at once
// take ~70 ms instead of ~3.7 s).
//
// # Namespaces and threads
//
// Network namespaces belong to OS threads. The package never switches
// the caller's thread: namespace work runs on a helper goroutine locked
// to its thread, which switches back afterwards and is unlocked only if
// that worked (otherwise the thread ends with the goroutine). Netlink
// sockets keep the namespace they were opened in, so Manager keeps one
// for the host and opens one per Setup inside the task's namespace.
//
// # Tests
//
// The tests need root. Each runs in a fresh network namespace of its
// own (the test goroutine's thread is moved there and never returned),
// so the machine's interfaces are never touched.
package network
