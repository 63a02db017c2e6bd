package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// placementFlags are the placement flags beyond constraints and the
// per-node maximum: spread preferences, the strategy and auto rebalance.
// Like specFlags, update applies only the flags that were given.
type placementFlags struct {
	prefs, prefAdd, prefRm []string
	strategy               string
	autoRebalance          bool
}

func (f *placementFlags) bind(fs *pflag.FlagSet, update bool) {
	if update {
		fs.StringArrayVar(&f.prefAdd, "placement-pref-add", nil, "add a spread preference, spread=node.labels.LABEL (repeatable; goes after the existing ones)")
		fs.StringArrayVar(&f.prefRm, "placement-pref-rm", nil, "remove a spread preference (repeatable)")
	} else {
		fs.StringArrayVar(&f.prefs, "placement-pref", nil, "spread tasks evenly over the values of a node label: spread=node.labels.LABEL (repeatable, outermost first)")
	}
	fs.StringVar(&f.strategy, "placement-strategy", "", "spread (default: fewest tasks of the service) or binpack (the fullest node that fits)")
	fs.BoolVar(&f.autoRebalance, "auto-rebalance", false, "spread the tasks again, under the update parallelism, when a node joins or returns (--auto-rebalance=false turns it off)")
}

// apply writes the placement flags that were set into spec.
func (f *placementFlags) apply(fs *pflag.FlagSet, spec *shoalv1.ServiceSpec) error {
	set := fs.Changed
	if !set("placement-pref") && !set("placement-pref-add") && !set("placement-pref-rm") && !set("placement-strategy") {
		if set("auto-rebalance") {
			spec.AutoRebalance = f.autoRebalance
		}
		return nil
	}
	if spec.Task == nil {
		spec.Task = &shoalv1.TaskSpec{}
	}
	if spec.Task.Placement == nil {
		spec.Task.Placement = &shoalv1.Placement{}
	}
	pl := spec.Task.Placement
	norm := func(flag, v string) (string, error) {
		key, ok := strings.CutPrefix(strings.TrimSpace(v), "spread=")
		if !ok || !strings.HasPrefix(key, "node.labels.") || key == "node.labels." {
			return "", fmt.Errorf("%s: %q: want spread=node.labels.LABEL", flag, v)
		}
		return key, nil
	}
	if set("placement-pref") {
		pl.Spread = nil
		for _, v := range f.prefs {
			k, err := norm("--placement-pref", v)
			if err != nil {
				return err
			}
			pl.Spread = append(pl.Spread, k)
		}
	}
	if set("placement-pref-rm") {
		for _, v := range f.prefRm {
			k, err := norm("--placement-pref-rm", v)
			if err != nil {
				return err
			}
			pl.Spread = slices.DeleteFunc(pl.Spread, func(s string) bool { return s == k })
		}
	}
	if set("placement-pref-add") {
		for _, v := range f.prefAdd {
			k, err := norm("--placement-pref-add", v)
			if err != nil {
				return err
			}
			if !slices.Contains(pl.Spread, k) {
				pl.Spread = append(pl.Spread, k)
			}
		}
	}
	if set("placement-strategy") {
		switch f.strategy {
		case "spread", "binpack":
			pl.Strategy = f.strategy
		default:
			return fmt.Errorf("--placement-strategy: want spread or binpack, got %q", f.strategy)
		}
	}
	if set("auto-rebalance") {
		spec.AutoRebalance = f.autoRebalance
	}
	return nil
}

// serviceRebalance asks the orchestrator to spread a service's tasks
// evenly again over the eligible nodes (under the update parallelism).
func (a *app) serviceRebalance() *cobra.Command {
	return &cobra.Command{Use: "rebalance SERVICE", Short: "Spread a service's tasks evenly again over the nodes that can take them", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
				cur, err := ctl.GetService(ctx, &shoalv1.GetServiceRequest{Ref: args[0]})
				if err != nil {
					return err
				}
				resp, err := ctl.RebalanceService(ctx, &shoalv1.RebalanceServiceRequest{ServiceId: cur.GetService().GetMeta().GetId()})
				if err != nil {
					return err
				}
				fmt.Fprintln(a.out, resp.GetService().GetSpec().GetName())
				return nil
			})
		}}
}
