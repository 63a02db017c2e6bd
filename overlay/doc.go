// Package overlay is the node side of Shoal's VXLAN overlay data plane.
//
// A Manager lives in one node's network namespace (its underlay address
// is the VXLAN tunnel endpoint, VTEP). The wiring step uses it like this:
//
//	m, err := overlay.New(overlay.Config{NetNS: nodeNS, VTEP: addr, Uplink: "eth0",
//		LocalSubnet: nodeLocalTaskSubnet})
//	err = m.Reconcile(ctx, states)             // every SessionMessage.Networks (full set)
//	res, err := m.Attach(ctx, taskNetNSPath, attachment, network) // after node-local setup
//	err = m.Detach(ctx, taskNetNSPath, attachment, network)       // on release
//
// Reconcile makes the kernel match the desired state of every overlay
// network listed: per network a bridge (shb-<vni>) and a VXLAN device
// (shx-<vni>: VNI, UDP 4789, learning off, proxy ARP on, local = VTEP,
// MTU = uplink MTU - 50 unless the spec sets one) enslaved to it, with
// bridge learning off on that port. For every endpoint on another node it
// keeps a permanent neighbour entry (IP -> MAC) and a permanent FDB entry
// (MAC -> remote VTEP, NTF_SELF) on the VXLAN device; nothing relies on
// learning or on miss notifications. Entries that are missing or wrong are
// (re)written, entries that are not desired are deleted, entries that are
// right are left untouched (so a restarted agent disturbs no established
// connection). Networks no longer listed are torn down unless a local
// task is still attached to their bridge.
//
// Attach joins a task's network namespace to a network with a veth
// (host side "shv<hash>" on the network's bridge, task side eth1, eth2, …
// carrying the attachment's address and MAC and the network's MTU; the
// subnet route is the connected route of the address). The task keeps its
// node-local interface as default route for egress, except on an
// internal network: then Attach deletes the task's IPv4 default routes and
// reports AttachResult.NoEgress, and the agent must not add one back.
//
// nftables (table ip "shoal-overlay" in the node namespace): masquerade
// of the node-local task subnet leaving through the uplink (egress), and
// a forward-hook drop of any routed packet from or to an overlay subnet,
// so the node never routes between overlay networks or out of one (bridged
// overlay frames, which pass the hook too when br_netfilter is loaded, are
// recognised by their device, the shb-… bridge, and left alone). The same
// table filters VXLAN at input: UDP 4789 is dropped (counted) unless it
// comes from a VTEP in the set "vteps", the remote VTEPs of the endpoints
// last reconciled plus those of hints programmed since (ApplyHint adds a
// hint's VTEP before writing its FDB entry; Reconcile, which removes the
// hints' entries, resets them). The whole table, set included, is written
// in one transaction, only when it differs from what is wanted;
// AllowedVTEPs and VXLANDropped read it back. Since a task's egress is
// masqueraded onto the node's address, which every peer's set holds, the
// forward hook also drops any routed packet leaving through the uplink to
// UDP 4789: no task can hand a peer a VXLAN packet of its making (the
// node's tunnels send from the node, never through forward; a task cannot
// reach an outside VXLAN endpoint either). A new Manager keeps the set
// it finds in the kernel until its first Reconcile, so a restarted agent
// does not cut its peers' tunnels.
//
// # Bridge and host networks (bridge_linux.go, bridge_nft_linux.go)
//
// Attach and Detach take bridge networks too (Node.Attach skips host
// networks: such a task is in the node's namespace). A bridge network has
// on each node with a task on it a Linux bridge named spec.bridge_name
// (specrules.BridgeName; default shbr-<first 10 characters of the id>)
// carrying the network's gateway address, MTU = the spec's or the
// uplink's; tasks are joined by veth exactly as on an overlay (eth1, …,
// internal: no default route). The task keeps its node-local interface as
// default route, so its egress leaves as an overlay task's does. The
// bridge is created on first use, marked with the alias
// "shoal-bridge:<id>", and deleted when its last task veth goes (Detach,
// or the next Reconcile); a bridge that existed before (the operator's)
// is used, gets the gateway when it lacks it, and is never deleted. A
// bridge that holds an address of the node-local task subnet, or that is
// the uplink (by name, or holding the VTEP address), is refused, and so
// is a subnet holding an address of another link of the node.
// Table ip "shoal-bridge" (one per node, rewritten when the set changes):
// nothing routed opens a connection into a bridge network (established
// and related replies pass), a non-internal one routes out only through
// the uplink and is masqueraded there, an internal one routes out nowhere;
// so bridge networks are isolated from each other, from overlays and from
// the node-local bridge. The managers deliver a bridge network's state
// with the node's own endpoints only, so names and VIPs answer local tasks.
//
// # Bridge-only nodes (Config.BridgeOnly)
//
// A node whose underlay cannot carry VXLAN (its advertise address is
// loopback, as in `shoal dev`) still needs the bridge data plane, which is
// node-local. New with BridgeOnly takes no VTEP and an optional uplink
// (without one: MTU 1500, bridge networks route out nowhere) and writes no
// table shoal-overlay; Reconcile keeps only the bridge networks' state;
// an overlay network is refused with ErrNoOverlay (an errdefs failed
// precondition, which the agent reports as REJECTED) by Manager.Attach
// and, before anything of the task is attached, by Node.Attach. Names,
// VIPs and published ports work as on any node; the daemon sends and
// takes no gossip hints there (they are about VXLAN endpoints).
//
// # Service discovery (Discovery)
//
// A Discovery is the node's DNS view (overlay/dns) plus, per task on
// overlay networks, its DNS server at 127.0.0.11 and its VIP rules
// (overlay/vip). The daemon wires it like this:
//
//	node := overlay.NewNode(m)
//	disc := overlay.NewDiscovery(dns.Forwarders{}, log)
//	// every Networks message (agent.NetworkReconciler):
//	err := node.Reconcile(ctx, full, states, removed) // kernel first (adds)
//	all := node.States()
//	err = disc.Update(all)                             // then names and VIPs
//	err = node.Prune(ctx, all)                         // then the entries gone from them
//	// gossip overlay.Withdrawn{VTEP, TaskID} for each new WithdrawnTasks(all)
//	// executor (agent.Discovery), after Overlay.Attach and on re-adoption:
//	err = disc.Start(ctx, taskID, taskNetNSPath, networkIDs)
//	err = disc.Stop(taskID)                            // on release
//
// A withdrawal runs the other way round from an arrival: the kernel keeps
// the FDB and neighbour entries of an endpoint that left the held set
// until Prune says names and VIPs were rebuilt without it, so no VIP
// picks a backend its host has no neighbour entry for. A node whose
// refresh saw a stopping task's endpoints past RUNNING gossips a
// Withdrawn acknowledgement; the task's own node signals the task once
// every node of EndpointNodes acknowledged (the agent's endpoint drain).
//
// Update swaps the view (lock-free reads) and re-programs the VIPs of the
// tasks whose VIP set changed (VIPsFor: the vip-mode services of the
// task's networks, backends = their serving endpoints, dns.Serves:
// RUNNING and, where the task has a health check, HEALTHY).
//
// # Published ports (ports_linux.go, ports_plan.go)
//
// The daemon (daemon/ports.go) runs, after every Networks message and on
// its repair tick:
//
//	uplink, underlay, _ := overlay.PortsUnderlay(ns, advertiseAddr)
//	ports := overlay.PlanPorts(nodeID, node.States(), localAddrOfTask, underlay)
//	peers, _, _ := overlay.PortNeighbours(ns, uplink, underlay, nodesToResolve)
//	err := overlay.ProgramPorts(ns, overlay.PortsConfig{Ports: ports,
//		Underlay: underlay, Uplink: uplink, Peers: peers, Hairpin: localSubnet})
//
// PlanPorts reads ServiceVIPState.ports and the serving endpoints: host
// mode and ingress with a local task → DNAT to the local tasks' node-local
// addresses (client address kept); ingress without a local task → DNAT to
// the underlay address of the nodes running one (Forward), without SNAT
// to a node on this node's underlay subnet (PortsPeerMark: the client's
// address is kept), masqueraded to one beyond it, never for a source that
// is a cluster node (at most one hop). ProgramPorts writes table ip
// "shoal-ports" in one transaction: chain mark (mangle prerouting: a new
// connection to a port gets the mark of the neighbour MAC it came from,
// map @hops; replies get their connection's mark back before routing),
// prerouting + output DNAT with numgen (a forwarding port first refuses
// the MACs of set @nodes), postrouting masquerade by ct mark 0x5301 and of
// hairpinned connections (source in the node-local subnet); then, by
// netlink, one "fwmark M lookup M" rule (priority PortsRulePriority) and
// table M "default via NEIGHBOUR" per peer, so the replies of a
// connection a node forwarded without SNAT go back through it, where its
// conntrack undoes the DNAT. PortRuleCount, PeerRuleCount and ClearPorts
// are for checks and tests.
//
// # Hints (gossip)
//
// When a local task on overlay networks becomes RUNNING or ends, the
// daemon gossips one Hint per attachment (network id, task id, address,
// MAC, VTEP, state; Encode/DecodeHint, at most MaxHintBytes) and peers
// merge what they receive before the managers' next delivery:
//
//	state, ok := overlay.HintState(status) // health: no hint while starting, SHUTDOWN when unhealthy
//	for _, h := range overlay.HintsFor(task, state, vtep) { b, _ := h.Encode(); gossip.SendHint(b) }
//	// on receipt (gossip has checked that the packet came from the named
//	// member's gossip address; the daemon drops a hint whose VTEP is not
//	// that address, so a key holder can only announce endpoints on itself):
//	h, err := overlay.DecodeHint(b)
//	r, err := node.ApplyHint(h) // then disc.Update(node.States()) unless HintIgnored
//
// The merge rule (the raft state decides): a hint about a network this
// node does not hold, about its own VTEP, outside the subnet, about an
// address the state gives another task or contradicting the state's
// record of the same task (MAC, VTEP) is ignored. For an endpoint the
// state has, the kernel entries are left alone whatever the hint says
// (a hint never removes an entry the state has); a hint with a later
// state only marks the endpoint's observed state in States(), so names
// and VIPs follow (RUNNING answers, an ended task stops answering). For an
// endpoint the state lacks, an up hint writes its FDB and neighbour
// entries at once and a down hint deletes exactly those. The next
// Reconcile drops every hint held (at most MaxHeldHints): entries of an
// endpoint the state does not have are removed, marks are forgotten.
package overlay
