package controlapi

import (
	"fmt"
	"slices"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/specrules"
)

// checkSpreadLabels refuses a spread preference over a node label that no
// node of the cluster has: such a preference can only be a typo (every
// node would fall in the "no label" group and the preference would change
// nothing, silently). prev is the spec being replaced (nil on create): a
// preference it already had is not checked again, so that an update of an
// unrelated field does not fail because nodes lost the label since.
func checkSpreadLabels(r raftstore.Reader, spec, prev *shoalv1.ServiceSpec) error {
	prefs := spec.GetTask().GetPlacement().GetSpread()
	if len(prefs) == 0 {
		return nil
	}
	old := prev.GetTask().GetPlacement().GetSpread()
	var nodes []*shoalv1.Node
	var fe fieldErrors
	for i, pref := range prefs {
		if slices.Contains(old, pref) {
			continue
		}
		label, ok := specrules.SpreadLabel(pref)
		if !ok {
			continue // the spec rules have said what is wrong with it
		}
		if nodes == nil {
			nodes = raftstore.List[*shoalv1.Node](r)
		}
		found := false
		for _, n := range nodes {
			if _, has := n.GetSpec().GetLabels()[label]; has {
				found = true
				break
			}
		}
		if !found {
			fe.add(fmt.Sprintf("spec.task.placement.spread[%d]", i),
				"no node has the label %q: label the nodes first (shoal node update NODE --label-add %s=VALUE)", label, label)
		}
	}
	return fe.err()
}
