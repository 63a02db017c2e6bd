package cli

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// networkCmd is `shoal network create|ls|inspect|rm|prune`.
func (a *app) networkCmd() *cobra.Command {
	c := &cobra.Command{Use: "network", Short: "Manage networks"}

	spec := &shoalv1.NetworkSpec{}
	var labels []string
	create := &cobra.Command{Use: "create [OPTIONS] NAME", Short: "Create a network", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec.Name = args[0]
			m, err := parseLabels("--label", labels)
			if err != nil {
				return err
			}
			spec.Labels = m
			return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
				r, err := ctl.CreateNetwork(ctx, &shoalv1.CreateNetworkRequest{Spec: spec})
				if err != nil {
					return err
				}
				fmt.Fprintln(a.out, r.GetNetwork().GetMeta().GetId())
				return nil
			})
		}}
	f := create.Flags()
	f.StringVarP(&spec.Driver, "driver", "d", "overlay", "overlay (VXLAN, cluster-wide), bridge (node-local) or host")
	f.StringVar(&spec.Subnet, "subnet", "", "IPv4 CIDR (default: a /24 from the cluster's address pool)")
	f.StringVar(&spec.Gateway, "gateway", "", "gateway address in the subnet (default: its first address)")
	f.StringArrayVar(&labels, "label", nil, "label key=value (repeatable)")
	f.BoolVar(&spec.Attachable, "attachable", false, "let standalone containers attach")
	f.BoolVar(&spec.Internal, "internal", false, "no egress beyond the network")
	f.Int32Var(&spec.Mtu, "mtu", 0, "MTU, 576-9000 (default: the underlay's minus 50 for overlay)")
	f.StringVar(&spec.BridgeName, "bridge-name", "", "bridge interface name on each node (bridge driver)")

	var lf listFlags
	ls := &cobra.Command{Use: "ls", Aliases: []string{"list"}, Short: "List networks", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := lf.check(); err != nil {
				return err
			}
			filters, err := lf.filterMap()
			if err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
				r, err := ctl.ListNetworks(ctx, &shoalv1.ListNetworksRequest{Filters: filters})
				if err != nil {
					return err
				}
				return a.printNetworks(r.GetNetworks(), lf)
			})
		}}
	lf.bind(ls, true)

	inspect := inspectCommand(a, "inspect NETWORK...", "Show networks in detail (JSON)",
		func(ctx context.Context, ctl shoalv1.ControlClient, ref string) (*shoalv1.Network, error) {
			r, err := ctl.GetNetwork(ctx, &shoalv1.GetNetworkRequest{Ref: ref})
			return r.GetNetwork(), err
		})

	rm := &cobra.Command{Use: "rm NETWORK...", Aliases: []string{"remove"}, Short: "Remove networks no service uses", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
				for _, ref := range args {
					if _, err := ctl.RemoveNetwork(ctx, &shoalv1.RemoveNetworkRequest{Ref: ref}); err != nil {
						return err
					}
					fmt.Fprintln(a.out, ref)
				}
				return nil
			})
		}}
	prune := &cobra.Command{Use: "prune", Short: "Remove every network no service uses", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
				r, err := ctl.PruneNetworks(ctx, &shoalv1.PruneNetworksRequest{})
				if err != nil {
					return err
				}
				for _, n := range r.GetRemoved() {
					fmt.Fprintln(a.out, n)
				}
				return nil
			})
		}}
	c.AddCommand(create, ls, inspect, rm, prune)
	return c
}

func parseLabels(flag string, list []string) (map[string]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, l := range list {
		k, v, _ := strings.Cut(l, "=")
		if k == "" {
			return nil, fmt.Errorf("%s: %q must be key=value", flag, l)
		}
		m[k] = v
	}
	return m, nil
}

func (a *app) printNetworks(nets []*shoalv1.Network, lf listFlags) error {
	switch {
	case lf.quiet:
		for _, n := range nets {
			fmt.Fprintln(a.out, n.GetMeta().GetId())
		}
		return nil
	case lf.format == "json":
		return printJSON(a.out, nets)
	}
	sort.Slice(nets, func(i, j int) bool { return nets[i].GetSpec().GetName() < nets[j].GetSpec().GetName() })
	w := table(a.out)
	fmt.Fprintln(w, "ID\tNAME\tDRIVER\tSUBNET\tGATEWAY\tVNI\tOPTIONS")
	for _, n := range nets {
		vni := ""
		if n.GetVni() != 0 {
			vni = fmt.Sprint(n.GetVni())
		}
		var opts []string
		if n.GetSpec().GetInternal() {
			opts = append(opts, "internal")
		}
		if n.GetSpec().GetAttachable() {
			opts = append(opts, "attachable")
		}
		if m := n.GetSpec().GetMtu(); m != 0 {
			opts = append(opts, fmt.Sprintf("mtu=%d", m))
		}
		if b := n.GetSpec().GetBridgeName(); b != "" {
			opts = append(opts, "bridge="+b)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shortID(n.GetMeta().GetId()), n.GetSpec().GetName(), n.GetSpec().GetDriver(),
			n.GetSubnet(), n.GetGateway(), vni, strings.Join(opts, ","))
	}
	return w.Flush()
}
