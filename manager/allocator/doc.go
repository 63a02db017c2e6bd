// Package allocator gives tasks their network attachments and services
// their virtual addresses. It runs on the raft leader only, next to the
// orchestrator: Allocator.Run is started when this manager becomes leader
// and its context is cancelled when leadership is lost.
//
// # Hand-over
//
// The orchestrator creates a task PENDING with its service's task spec,
// whose networks[].target are network ids (the Control API resolves names
// when the service is stored). The allocator gives such a task one
// NetworkAttachment per network — address (CIDR) from the network's
// subnet, MAC 02:42:a:b:c:d derived from it, the aliases of the spec;
// none for a host network — and writes it back still PENDING. The
// scheduler loop places only tasks for which Allocated is true, and the
// allocator's write is what makes its next pass due. A task that cannot
// be allocated (pool exhausted, network gone) stays PENDING with the
// reason in status.message (written only when it changes).
//
// A service in vip mode (the default) gets a ServiceVIP per network of
// its spec that has a subnet; dnsrr services have none; a network dropped
// from the spec frees its VIP.
//
// # Addresses
//
// Pool (one per network with a subnet) never hands out the network,
// gateway or broadcast address. Addresses never used come first; then the
// least recently freed, so a freed address is reused as late as possible
// and a peer still holding a stale entry for it has time to drop it.
// Addresses are freed when a task ends (terminal state) or is deleted and
// when a service is deleted (its VIPs) — from watch events, each checked
// against the holder, so a stale event cannot free an address that was
// handed out again. State is rebuilt from the store on leadership (and
// after a watch is cut off): every address of a task that has not ended,
// every VIP.
//
// # Passes
//
// Plan is a pure function of the State, a store view and the Work
// (table-tested); a pass writes it in one store.Update of at most 1,000
// objects and 1 MiB and goes on at once when the budget stopped it. The
// work is what events named since the last committed pass — the service
// of a service event that changes what its VIPs depend on (endpoint mode,
// network targets, the VIPs themselves: a label or replica patch is no
// work, sameVIPInputs), the pending task of a task event, and the networks
// those name — so a service event costs one service, not a listing of
// every service (237 against 7 µs with 1,000 services,
// BenchmarkPassOneServiceOf1000); a service event that changes nothing
// ServiceVIPs reads (endpoint mode, network targets, VIPs: a label or
// replica patch) costs nothing (sameVIPInputs). A pass over everything happens after a
// rebuild and on any network event (rare; a pool appears or goes). What
// fails (a full pool, a missing network) is blocked and put back into the
// work when an address is freed, by an event or by a pass that dropped a
// VIP. TestIncrementalRandomEventOrders checks, over random event orders
// and late events, that this state equals a rebuild from the store and
// that a pass over everything then finds nothing missed. An entry that fails is
// undone (Undo), so nothing leaks; a version conflict is retried with
// backoff.
package allocator
