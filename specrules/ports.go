package specrules

import (
	"fmt"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// PortProtocol is a port's protocol with the default filled in: "tcp"
// unless it says "udp".
func PortProtocol(p *shoalv1.PortConfig) string {
	if p.GetProtocol() == "" {
		return "tcp"
	}
	return p.GetProtocol()
}

// PublishMode is a port's publish mode with the default filled in:
// "ingress" unless it says "host".
func PublishMode(p *shoalv1.PortConfig) string {
	if p.GetPublishMode() == "" {
		return "ingress"
	}
	return p.GetPublishMode()
}

// PortKey names a published port for conflict checks: "8080/tcp".
func PortKey(p *shoalv1.PortConfig) string {
	return fmt.Sprintf("%d/%s", p.GetPublishedPort(), PortProtocol(p))
}

// ports checks spec.endpoint.ports: target 1-65535, published 1-65535
// (a published port must be chosen: there is no automatic assignment),
// protocol tcp|udp, mode ingress|host, not a port the cluster uses
// (reservedPorts), and no published port/protocol listed twice.
func ports(p *Problems, ps []*shoalv1.PortConfig) {
	seen := map[string]int{}
	for i, port := range ps {
		f := fmt.Sprintf("spec.endpoint.ports[%d]", i)
		if port.GetTargetPort() == 0 || port.GetTargetPort() > 65535 {
			p.Add(f+".target_port", "must be 1-65535, got %d", port.GetTargetPort())
		}
		if port.GetPublishedPort() == 0 || port.GetPublishedPort() > 65535 {
			p.Add(f+".published_port", "must be 1-65535, got %d", port.GetPublishedPort())
		}
		switch port.GetProtocol() {
		case "", "tcp", "udp":
		default:
			p.Add(f+".protocol", "must be tcp or udp, got %q", port.GetProtocol())
		}
		switch port.GetPublishMode() {
		case "", "ingress", "host":
		default:
			p.Add(f+".publish_mode", "must be ingress or host, got %q", port.GetPublishMode())
		}
		if port.GetName() != "" && !isDNSLabel(port.GetName()) {
			p.Add(f+".name", "%q is not a valid name (letters, digits and '-', at most 63)", port.GetName())
		}
		if port.GetPublishedPort() == 0 {
			continue
		}
		k := PortKey(port)
		if why, ok := reservedPorts[k]; ok {
			p.Add(f+".published_port", "%s is reserved for %s (publishing it would divert that traffic of every node)", k, why)
			continue
		}
		if j, ok := seen[k]; ok {
			p.Add(f+".published_port", "%s is already published by ports[%d]", k, j)
			continue
		}
		seen[k] = i
	}
}

// reservedPorts are the node ports the cluster itself uses on every node
// (VXLAN, fixed; gossip, its default port): a published port's DNAT rule
// takes every packet to a node-local address on that port.
var reservedPorts = map[string]string{
	"4789/udp": "the overlay (VXLAN)",
	"7946/udp": "gossip",
	"7946/tcp": "gossip",
}

func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
