package specrules

import (
	"strings"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// autoRebalance checks spec.auto_rebalance against what the orchestrator
// rebalances: only replicated services placed by spread (a global or job
// service runs where its mode puts it, and binpack packs on purpose), so
// the flag anywhere else would be silently ignored.
func autoRebalance(p *Problems, spec *shoalv1.ServiceSpec) {
	if !spec.GetAutoRebalance() {
		return
	}
	if m := spec.GetMode(); m != shoalv1.ServiceMode_SERVICE_MODE_REPLICATED {
		p.Add("spec.auto_rebalance", "only for replicated services, not %s (its mode places its tasks)",
			strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(m.String(), "SERVICE_MODE_")), "_", "-"))
	}
	if spec.GetTask().GetPlacement().GetStrategy() == "binpack" {
		p.Add("spec.auto_rebalance", "contradicts spec.task.placement.strategy binpack (rebalancing spreads tasks; binpack packs them)")
	}
}
