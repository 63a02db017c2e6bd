package specrules

import (
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestAgentHello(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	for _, c := range []struct {
		name  string
		hello *shoalv1.AgentHello
		field string // "" for none
	}{
		{"nil", nil, ""},
		{"ordinary", &shoalv1.AgentHello{Addr: "10.0.0.1:4242", AgentAddr: "10.0.0.1:4243", GossipAddr: "10.0.0.1:7946",
			Description: &shoalv1.NodeDescription{Hostname: "node-1", Os: "linux", Arch: "amd64", EngineVersion: "shoal dev"}}, ""},
		{"at the bounds", &shoalv1.AgentHello{Addr: long(MaxNodeAddr), AgentAddr: long(MaxNodeAddr), GossipAddr: long(MaxNodeAddr),
			Description: &shoalv1.NodeDescription{Hostname: long(MaxNodeHostname), Os: long(MaxNodePlatform), Arch: long(MaxNodePlatform), EngineVersion: long(MaxNodeEngineVersion)}}, ""},
		{"hostname", &shoalv1.AgentHello{Description: &shoalv1.NodeDescription{Hostname: long(1 << 20)}}, "hello.description.hostname"},
		{"os", &shoalv1.AgentHello{Description: &shoalv1.NodeDescription{Os: long(MaxNodePlatform + 1)}}, "hello.description.os"},
		{"arch", &shoalv1.AgentHello{Description: &shoalv1.NodeDescription{Arch: long(MaxNodePlatform + 1)}}, "hello.description.arch"},
		{"engine version", &shoalv1.AgentHello{Description: &shoalv1.NodeDescription{EngineVersion: long(MaxNodeEngineVersion + 1)}}, "hello.description.engine_version"},
		{"addr", &shoalv1.AgentHello{Addr: long(MaxNodeAddr + 1)}, "hello.addr"},
		{"agent addr", &shoalv1.AgentHello{AgentAddr: long(MaxNodeAddr + 1)}, "hello.agent_addr"},
		{"gossip addr", &shoalv1.AgentHello{GossipAddr: long(MaxNodeAddr + 1)}, "hello.gossip_addr"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := AgentHello(c.hello)
			switch {
			case c.field == "" && len(p) != 0:
				t.Fatalf("problems %v, want none", p)
			case c.field != "" && (len(p) != 1 || p[0].Field != c.field || !strings.Contains(p[0].Reason, "at most")):
				t.Fatalf("problems %v, want one for %s", p, c.field)
			}
			if len(p.Error()) > 1000 {
				t.Fatalf("the refusal echoes the value: %d bytes", len(p.Error()))
			}
		})
	}
}
