package controlapi

import (
	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/specrules"
)

// checkPortConflicts refuses a spec that publishes a port (same number and
// protocol, either mode) another service already publishes, naming that
// service. It reads in the same transaction as the write, so two creates
// racing for one port cannot both pass. self is the service being updated
// ("" on create). Host-mode ports conflict too: both modes bind the port
// on the nodes, and a host-mode task may land on any node.
func checkPortConflicts(r raftstore.Reader, self string, spec *shoalv1.ServiceSpec) error {
	want := map[string]int{}
	for i, p := range spec.GetEndpoint().GetPorts() {
		if p.GetPublishedPort() != 0 {
			want[specrules.PortKey(p)] = i
		}
	}
	if len(want) == 0 {
		return nil
	}
	for _, svc := range raftstore.List[*shoalv1.Service](r) {
		if svc.GetMeta().GetId() == self {
			continue
		}
		for _, p := range svc.GetSpec().GetEndpoint().GetPorts() {
			if p.GetPublishedPort() == 0 {
				continue
			}
			if i, ok := want[specrules.PortKey(p)]; ok {
				return errdefs.AlreadyExistsf("spec.endpoint.ports[%d].published_port: %s is already published by service %q (%s)",
					i, specrules.PortKey(p), svc.GetSpec().GetName(), svc.GetMeta().GetId())
			}
		}
	}
	return nil
}
