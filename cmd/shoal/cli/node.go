package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func (a *app) nodeCmd() *cobra.Command {
	c := &cobra.Command{Use: "node", Short: "Manage nodes"}
	var lf listFlags
	ls := &cobra.Command{Use: "ls", Short: "List nodes", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, _ []string) error {
		if err := lf.check(); err != nil {
			return err
		}
		filters, err := lf.filterMap()
		if err != nil {
			return err
		}
		cl, err := a.dial(cmd.Context())
		if err != nil {
			return err
		}
		defer cl.Close()
		ctx, cancel := a.call(cmd.Context())
		defer cancel()
		resp, err := client.ListNodes(ctx, cl.Control, &shoalv1.ListNodesRequest{Filters: filters})
		if err != nil {
			return err
		}
		// Right after `shoal dev`/`init`, its own node's agent is about to
		// connect: show it as it is then (nodewait.go).
		nodes := awaitStarting(ctx, cl.Control, resp.GetNodes(), a.localNodeID(), localNodeWait)
		return a.printNodes(nodes, lf)
	}}
	lf.bind(ls, true)

	inspect := inspectCommand(a, "inspect NODE...", "Show nodes in detail (JSON)",
		func(ctx context.Context, ctl shoalv1.ControlClient, ref string) (*shoalv1.Node, error) {
			r, err := ctl.GetNode(ctx, &shoalv1.GetNodeRequest{Ref: ref})
			return r.GetNode(), err
		})

	var avail string
	var labelAdd, labelRm []string
	update := &cobra.Command{Use: "update NODE", Short: "Change a node's availability or labels", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.updateNode(cmd, args[0], func(s *shoalv1.NodeSpec) error {
				if avail != "" {
					v, ok := shoalv1.NodeAvailability_value["NODE_AVAILABILITY_"+strings.ToUpper(avail)]
					if !ok {
						return fmt.Errorf("--availability: want active, pause or drain, got %q", avail)
					}
					s.Availability = shoalv1.NodeAvailability(v)
				}
				if s.Labels == nil {
					s.Labels = map[string]string{}
				}
				for _, l := range labelAdd {
					k, v, _ := strings.Cut(l, "=")
					if k == "" {
						return fmt.Errorf("--label-add: %q must be key=value", l)
					}
					s.Labels[k] = v
				}
				for _, k := range labelRm {
					delete(s.Labels, k)
				}
				return nil
			})
		}}
	update.Flags().StringVar(&avail, "availability", "", "active, pause or drain")
	update.Flags().StringArrayVar(&labelAdd, "label-add", nil, "add or change a label key=value")
	update.Flags().StringArrayVar(&labelRm, "label-rm", nil, "remove a label")

	role := func(use, short string, r shoalv1.NodeRole) *cobra.Command {
		return &cobra.Command{Use: use + " NODE...", Short: short, Args: cobra.MinimumNArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
			for _, ref := range args {
				if err := a.updateNode(cmd, ref, func(s *shoalv1.NodeSpec) error { s.DesiredRole = r; return nil }); err != nil {
					return err
				}
				fmt.Fprintf(a.out, "Node %s: desired role %s.\n", ref, enumShort(r.String(), "NODE_ROLE_"))
			}
			return nil
		}}
	}
	var force bool
	rm := &cobra.Command{Use: "rm NODE...", Aliases: []string{"remove"}, Short: "Remove nodes from the cluster", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
				for _, ref := range args {
					if _, err := ctl.RemoveNode(ctx, &shoalv1.RemoveNodeRequest{Ref: ref, Force: force}); err != nil {
						return err
					}
					fmt.Fprintln(a.out, ref)
				}
				return nil
			})
		}}
	rm.Flags().BoolVar(&force, "force", false, "remove a node that is still ready")
	c.AddCommand(ls, inspect, update, role("promote", "Make nodes managers", shoalv1.NodeRole_NODE_ROLE_MANAGER),
		role("demote", "Make nodes workers", shoalv1.NodeRole_NODE_ROLE_WORKER), rm)
	return c
}

// withClient dials and runs f with a call-bounded context.
func (a *app) withClient(cmd *cobra.Command, f func(ctx context.Context, ctl shoalv1.ControlClient) error) error {
	cl, err := a.dial(cmd.Context())
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := a.call(cmd.Context())
	defer cancel()
	return f(ctx, cl.Control)
}

// conflictAttempts bounds the re-reads of an object that keeps changing
// under a read-modify-write.
const conflictAttempts = 5

// retryConflict runs a read-modify-write again when the write failed on a
// version conflict (ABORTED): the change is re-applied to the new version,
// never written over it.
func retryConflict(f func() error) error {
	var err error
	for range conflictAttempts {
		if err = f(); !errdefs.IsConflict(err) {
			return err
		}
	}
	return err
}

// updateNode reads a node, changes its spec and writes it back with the
// version read.
func (a *app) updateNode(cmd *cobra.Command, ref string, change func(*shoalv1.NodeSpec) error) error {
	return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
		// The node object also changes with its status (heartbeats,
		// sessions): re-read and re-apply the change on a version conflict.
		return retryConflict(func() error {
			r, err := ctl.GetNode(ctx, &shoalv1.GetNodeRequest{Ref: ref})
			if err != nil {
				return err
			}
			n := r.GetNode()
			spec := proto.Clone(n.GetSpec()).(*shoalv1.NodeSpec)
			if spec == nil {
				spec = &shoalv1.NodeSpec{}
			}
			if err := change(spec); err != nil {
				return err
			}
			_, err = ctl.UpdateNode(ctx, &shoalv1.UpdateNodeRequest{NodeId: n.GetMeta().GetId(), Version: n.GetMeta().GetVersion(), Spec: spec})
			return err
		})
	})
}

func nodeName(n *shoalv1.Node) string {
	if n.GetSpec().GetName() != "" {
		return n.GetSpec().GetName()
	}
	return n.GetDescription().GetHostname()
}

func (a *app) printNodes(nodes []*shoalv1.Node, lf listFlags) error {
	switch {
	case lf.quiet:
		for _, n := range nodes {
			fmt.Fprintln(a.out, n.GetMeta().GetId())
		}
		return nil
	case lf.format == "json":
		return printJSON(a.out, nodes)
	}
	w := table(a.out)
	now := time.Now()
	fmt.Fprintln(w, "ID\tNAME\tADDRESS\tSTATUS\tAVAILABILITY\tROLE\tMANAGER STATUS\tGOSSIP")
	for _, n := range nodes {
		ms := ""
		if m := n.GetManagerStatus(); m != nil {
			ms = titled(m.GetReachability())
			if m.GetLeader() {
				ms = "Leader"
			}
		}
		// GOSSIP: the leader's gossip view of the node ("-" not known yet).
		gs := n.GetStatus().GetGossipState()
		if gs == "" {
			gs = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.GetMeta().GetId(), nodeName(n), n.GetStatus().GetAddr(),
			nodeStatusAt(n, now),
			titled(enumShort(n.GetSpec().GetAvailability().String(), "NODE_AVAILABILITY_")),
			enumShort(n.GetRole().String(), "NODE_ROLE_"), ms, gs)
	}
	return w.Flush()
}
