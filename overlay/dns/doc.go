// Package dns is the embedded DNS server of tasks on user networks:
// service discovery by name, answered at 127.0.0.11:53 (UDP and TCP)
// inside each task's network namespace.
//
// # Use (by the agent, per node and per task)
//
//	view := dns.NewView()                 // one per node
//	view.Update(states)                   // every time the session delivers
//	                                      // []*shoalv1.NetworkState (full set)
//	srv, err := dns.Serve(ctx, att.NetNSPath, taskNetworkIDs, view, dns.Forwarders{})
//	err = dns.WriteResolvConf(filepath.Join(taskDir, "resolv.conf"), "/etc/resolv.conf")
//	...                                   // runtime bind-mounts that file read-only
//	                                      // on /etc/resolv.conf in the container
//	srv.Close()                           // when the task's namespace goes away
//
// Serve opens its two sockets inside the namespace (a locked OS thread
// switches in, opens them and switches back) and serves them from the
// agent's goroutines; nothing else runs in the namespace. It brings the
// namespace's loopback up if it is down (127.0.0.11 lives on lo).
//
// # Answers
//
// Names are scoped by network: a task's server only knows the networks
// it was given, so a service on another network is NXDOMAIN. Per network
// (see View.Update): SERVICE → its VIP (endpoint mode vip) or the
// addresses of its endpoints (dnsrr, or no VIP state), shuffled per
// answer; tasks.SERVICE → all endpoint addresses; service aliases answer
// like the service; endpoint aliases answer with the endpoints carrying
// them. Only endpoints that serve ([Serves]: RUNNING and, where the task
// has a health check, HEALTHY) are answered; the others keep their
// service's name known. A known name with nothing to answer (no serving
// task, or an AAAA query) is NOERROR with no data.
// TTL is 0: nothing caches a cluster answer, so a query after Update
// sees the new state (the view is swapped atomically; no lock on reads).
//
// Unknown single-label names and tasks.X are NXDOMAIN, never forwarded.
// A task on an --internal network (or on one not delivered yet) gets
// REFUSED for every other unknown name: forwarding would be egress.
// Every other name goes to the forwarders (default: the nameservers of
// the agent's /etc/resolv.conf, dialled from the agent's namespace), in
// order, each with a timeout (default 2 s), UDP then TCP if truncated;
// when all fail the answer is SERVFAIL. At most MaxForwards (64) queries
// of one server are forwarded at a time; beyond that the answer is
// SERVFAIL at once. Close ends the forwards in flight. UDP answers larger than the
// client's buffer (512 or its EDNS0 size) are truncated (TC set).
//
// Not done: PTR (reverse) answers, SRV records, IPv6 endpoints are
// answered to AAAA only if present in the state.
package dns
