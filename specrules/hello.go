package specrules

import shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"

// Bounds of what an agent says of its node when a session opens: the
// dispatcher writes it into the node object, which every manager keeps
// and every node listing copies, and writes up to 512 openings in one raft
// entry. Unbounded, one node's hello of megabytes (gRPC takes 4 MiB) was
// stored as it came, and two or three of them in a batch made its entry
// too large, so every other opening in it failed with them, again at each
// reconnection.
const (
	MaxNodeHostname      = 255 // bytes (the kernel's is at most 64, a DNS name 253)
	MaxNodePlatform      = 64  // bytes of os, of arch
	MaxNodeEngineVersion = 256 // bytes
	MaxNodeAddr          = 512 // bytes of a host:port
)

// AgentHello checks the hello a session opens with.
func AgentHello(h *shoalv1.AgentHello) Problems {
	var p Problems
	bound := func(field, v string, limit int) {
		if len(v) > limit {
			p.Add(field, "%d bytes long, at most %d", len(v), limit)
		}
	}
	if d := h.GetDescription(); d != nil {
		bound("hello.description.hostname", d.GetHostname(), MaxNodeHostname)
		bound("hello.description.os", d.GetOs(), MaxNodePlatform)
		bound("hello.description.arch", d.GetArch(), MaxNodePlatform)
		bound("hello.description.engine_version", d.GetEngineVersion(), MaxNodeEngineVersion)
	}
	bound("hello.addr", h.GetAddr(), MaxNodeAddr)
	bound("hello.agent_addr", h.GetAgentAddr(), MaxNodeAddr)
	bound("hello.gossip_addr", h.GetGossipAddr(), MaxNodeAddr)
	return p
}
