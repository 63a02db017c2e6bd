// Package vip load-balances a service's virtual IP inside a task's
// network namespace with nftables (no IPVS on this kernel), through
// google/nftables on a netlink socket opened into the namespace
// (nftables.WithNetNSFd): no nft binary, no thread switching.
//
// # Use (by the agent, per task namespace)
//
//	err := vip.Program(att.NetNSPath, []vip.VIP{
//		{Addr: net.ParseIP("10.0.1.2"), Backends: []net.IP{...running task addresses...}},
//	})                         // whenever the VIPs or backends of the task's networks change;
//	                           // idempotent, give the whole set every time
//	err = vip.Clear(att.NetNSPath)   // optional: drops the table
//	n, err := vip.RuleCount(att.NetNSPath) // for a repair check
//
// # Rules
//
// Table "shoal-vip" (family ip), owned by this package. Chain output
// (type nat, hook output, priority -100): per VIP
//
//	ip daddr VIP dnat to numgen inc mod N map { 0: B0, 1: B1, ... }
//
// so NEW connections go round-robin over the backends (sorted, so that
// the same set gives the same map) and keep their destination port.
// A VIP with no backend is rejected in chain output-filter (type filter,
// hook output) with ICMP port unreachable: connect fails at once with
// ECONNREFUSED rather than waiting on ARP for an address nobody owns.
//
// Every Program is one nftables transaction (add table, delete table,
// add table and all of its content in one batch): no reader sees a
// partial state, and there is nothing to diff. The batch's netlink
// socket gets 16 MiB buffers and capped acks: with the defaults, 100
// VIPs overflowed the acks (ENOBUFS) and 500 the send (EMSGSIZE); 500
// VIPs × 10 backends are tested.
//
// The agent programs in each task namespace the VIPs of that task's
// networks only (scoping is the agent's: a VIP of another network must
// not be given).
//
// # Connections
//
// NAT decisions live in conntrack, which rules are not consulted for
// after the first packet: a connection to a backend that remains is
// untouched by any Program; one to a removed backend also keeps its
// mapping (it fails only when that task goes away). There is no idle
// timeout of ours: the conntrack defaults of the namespace apply,
// nf_conntrack_tcp_timeout_established = 432000 s (5 days) and
// nf_conntrack_udp_timeout_stream = 120 s on this kernel; a TCP
// connection idle longer than 5 days loses its mapping (keepalives
// reset the timer). IPVS's 900 s idle cut (docker/docs#5519) does not
// exist here.
//
// Only IPv4. Traffic from outside the namespace to a VIP (ingress) is
// not handled here.
package vip
