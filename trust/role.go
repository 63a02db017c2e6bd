package trust

import (
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Role is what a certificate allows its holder to be. It is stored in the
// certificate's Subject OU.
type Role string

// The roles a certificate can carry.
const (
	RoleManager Role = "manager"
	RoleWorker  Role = "worker"
	// RoleAdmin is an operator's client certificate (the CLI); it names no node.
	RoleAdmin Role = "admin"
)

// TLS names and ALPN protocols of the manager port.
const (
	// ManagerServerName is a DNS SAN present only in manager certificates.
	// Clients dialling a manager verify the server against this name instead of
	// the address they dialled: addresses change and are not in certificates,
	// roles are, and a worker certificate cannot satisfy it.
	ManagerServerName = "manager.shoal"
	// WorkerServerName is the DNS SAN of worker certificates; nothing dials a
	// worker as a server today, it only makes the role visible to tools.
	WorkerServerName = "worker.shoal"

	// ALPNGRPC selects the gRPC server on the multiplexed manager port.
	ALPNGRPC = "h2"
	// ALPNRaft selects the raft transport on the multiplexed manager port.
	ALPNRaft = "shoal-raft"
)

// RoleFromProto maps the API's node role; NODE_ROLE_UNSPECIFIED (and any
// unknown value) maps to the empty Role.
func RoleFromProto(r shoalv1.NodeRole) Role {
	switch r {
	case shoalv1.NodeRole_NODE_ROLE_MANAGER:
		return RoleManager
	case shoalv1.NodeRole_NODE_ROLE_WORKER:
		return RoleWorker
	}
	return ""
}

// Proto maps a node role to the API's enum; admin (not a node) and unknown
// roles map to NODE_ROLE_UNSPECIFIED.
func (r Role) Proto() shoalv1.NodeRole {
	switch r {
	case RoleManager:
		return shoalv1.NodeRole_NODE_ROLE_MANAGER
	case RoleWorker:
		return shoalv1.NodeRole_NODE_ROLE_WORKER
	}
	return shoalv1.NodeRole_NODE_ROLE_UNSPECIFIED
}

// valid reports whether r is one of the known roles.
func (r Role) valid() bool {
	return r == RoleManager || r == RoleWorker || r == RoleAdmin
}
