// Package restartpolicy holds the rules of a service's restart policy:
// whether the newest task of a slot (of a node, for a global service)
// gets a replacement now, later, or never, and which ended tasks count
// towards max_attempts.
//
// The orchestrator (manager/orchestrator) applies them; the CLI uses the
// same function to end `service create/update` at once, with the reason,
// when a slot will never be repaired. One copy of the rules, so the two
// cannot disagree. It is a leaf: it imports nothing of Shoal but proto/,
// so both sides may import it.
package restartpolicy
