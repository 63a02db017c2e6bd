package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/specrules"
)

func (a *app) clusterCmd() *cobra.Command {
	c := &cobra.Command{Use: "cluster", Short: "Inspect and configure the cluster"}
	c.AddCommand(a.clusterUpdateCmd())
	c.AddCommand(&cobra.Command{Use: "inspect", Short: "Show the cluster and its raft members (JSON)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
				resp, err := ctl.GetCluster(ctx, &shoalv1.GetClusterRequest{})
				if err != nil {
					return err
				}
				b, err := jsonOpts.Marshal(resp)
				if err != nil {
					return err
				}
				fmt.Fprintln(a.out, string(b))
				return nil
			})
		}})
	return c
}

func parseRole(s string) (shoalv1.NodeRole, error) {
	switch s {
	case "worker":
		return shoalv1.NodeRole_NODE_ROLE_WORKER, nil
	case "manager":
		return shoalv1.NodeRole_NODE_ROLE_MANAGER, nil
	}
	return 0, fmt.Errorf("want worker or manager, got %q", s)
}

// joinTokenVerbs are `show` and `rotate` of join tokens, under
// `join-token` and (as before API tokens existed) under `token`.
func (a *app) joinTokenVerbs() []*cobra.Command {
	show := &cobra.Command{Use: "show worker|manager", Short: "Print a join token", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			role, err := parseRole(args[0])
			if err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
				resp, err := ctl.GetCluster(ctx, &shoalv1.GetClusterRequest{})
				if err != nil {
					return err
				}
				tok := resp.GetCluster().GetTokens().GetWorker()
				if role == shoalv1.NodeRole_NODE_ROLE_MANAGER {
					tok = resp.GetCluster().GetTokens().GetManager()
				}
				fmt.Fprintln(a.out, tok)
				return nil
			})
		}}
	rotate := &cobra.Command{Use: "rotate worker|manager", Short: "Replace a join token (the old one stops working)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			role, err := parseRole(args[0])
			if err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
				resp, err := ctl.RotateJoinToken(ctx, &shoalv1.RotateJoinTokenRequest{Role: role})
				if err != nil {
					return err
				}
				fmt.Fprintln(a.out, resp.GetToken())
				return nil
			})
		}}
	return []*cobra.Command{show, rotate}
}

func (a *app) eventsCmd() *cobra.Command {
	var since uint64
	var format string
	var kinds []string
	cmd := &cobra.Command{Use: "events", Short: "Stream changes to the cluster state", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := a.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer cl.Close()
			stream, err := cl.Control.Watch(cmd.Context(), &shoalv1.WatchRequest{FromIndex: since, Kinds: kinds})
			if err != nil {
				return err
			}
			for {
				ev, err := stream.Recv()
				if err != nil {
					if cmd.Context().Err() != nil {
						return nil
					}
					return err
				}
				if format == "json" {
					b, err := jsonOpts.Marshal(ev)
					if err != nil {
						return err
					}
					fmt.Fprintln(a.out, strings.ReplaceAll(string(b), "\n", ""))
					continue
				}
				kind, id, name := describeObject(ev.GetObject())
				fmt.Fprintf(a.out, "%s %d %s %s %s %s\n", time.Now().Format(time.RFC3339), ev.GetIndex(), kind,
					enumShort(ev.GetAction().String(), "WATCH_ACTION_"), id, name)
			}
		}}
	cmd.Flags().Uint64Var(&since, "since-index", 0, "replay from this raft index (0: from now)")
	cmd.Flags().StringVar(&format, "format", "text", "text or json (one event per line)")
	cmd.Flags().StringArrayVar(&kinds, "kind", nil, "only these kinds: cluster, node, service, task, network")
	return cmd
}

func describeObject(o *shoalv1.StoreObject) (kind, id, name string) {
	switch {
	case o.GetCluster() != nil:
		return "cluster", o.GetCluster().GetMeta().GetId(), o.GetCluster().GetName()
	case o.GetNode() != nil:
		return "node", o.GetNode().GetMeta().GetId(), nodeName(o.GetNode())
	case o.GetService() != nil:
		return "service", o.GetService().GetMeta().GetId(), o.GetService().GetSpec().GetName()
	case o.GetTask() != nil:
		t := o.GetTask()
		return "task", t.GetMeta().GetId(), taskName(t) + " " + enumShort(t.GetStatus().GetState().String(), "TASK_STATE_")
	case o.GetNetwork() != nil:
		return "network", o.GetNetwork().GetMeta().GetId(), o.GetNetwork().GetSpec().GetName()
	}
	return "unknown", "", ""
}

// clusterUpdateCmd is `shoal cluster update`: change cluster settings
// (read, modify, write with the version read; retried on a conflict).
func (a *app) clusterUpdateCmd() *cobra.Command {
	var certExpiry, restartGrace string
	var maxReplicas, historyLimit int64
	var rotateGossip bool
	cmd := &cobra.Command{Use: "update", Short: "Change cluster settings", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fl := cmd.Flags()
			if !fl.Changed("cert-expiry") && !fl.Changed("max-replicas") && !fl.Changed("restart-grace") && !fl.Changed("task-history-limit") && !rotateGossip {
				return errNoChange
			}
			apply := func(s *shoalv1.ClusterSettings) error {
				if fl.Changed("cert-expiry") {
					d, err := parseLongDuration("--cert-expiry", certExpiry)
					if err != nil {
						return err
					}
					s.NodeCertExpiryMs = d.Milliseconds()
				}
				if fl.Changed("max-replicas") {
					if maxReplicas <= 0 {
						return fmt.Errorf("--max-replicas: must be positive, got %d", maxReplicas)
					}
					s.MaxReplicas = maxReplicas
				}
				if fl.Changed("restart-grace") {
					d, err := parseLongDuration("--restart-grace", restartGrace)
					if err != nil {
						return err
					}
					s.RestartGraceMs = d.Milliseconds()
				}
				if fl.Changed("task-history-limit") {
					if historyLimit <= 0 {
						return fmt.Errorf("--task-history-limit: must be positive, got %d", historyLimit)
					}
					s.TaskHistoryLimit = historyLimit
				}
				return nil
			}
			if err := apply(&shoalv1.ClusterSettings{}); err != nil { // flag errors before any call
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
				var out *shoalv1.Cluster
				err := retryConflict(func() error {
					cur, err := ctl.GetCluster(ctx, &shoalv1.GetClusterRequest{})
					if err != nil {
						return err
					}
					set := cur.GetCluster().GetSettings()
					if set == nil {
						set = &shoalv1.ClusterSettings{}
					}
					if err := apply(set); err != nil {
						return err
					}
					resp, err := ctl.UpdateCluster(ctx, &shoalv1.UpdateClusterRequest{Version: cur.GetCluster().GetMeta().GetVersion(), Settings: set, RotateGossipKey: rotateGossip})
					if err != nil {
						return err
					}
					out = resp.GetCluster()
					return nil
				})
				if err != nil {
					return err
				}
				s := out.GetSettings()
				if rotateGossip {
					fmt.Fprintln(a.out, "Gossip key rotated: nodes encrypt with the new key as they receive it; the previous key stays accepted until the next rotation.")
				}
				fmt.Fprintf(a.out, "Cluster updated: cert expiry %s, max replicas %s, restart grace %s, task history limit %s.\n",
					settingDuration(s.GetNodeCertExpiryMs(), specrules.DefaultNodeCertExpiry), settingInt(s.GetMaxReplicas(), specrules.DefaultMaxReplicas),
					settingDuration(s.GetRestartGraceMs(), specrules.DefaultRestartGrace), settingInt(s.GetTaskHistoryLimit(), defaultTaskHistoryLimit))
				return nil
			})
		}}
	cmd.Flags().StringVar(&certExpiry, "cert-expiry", "", "lifetime of node certificates, e.g. 90d, 720h (nodes renew at two thirds of it)")
	cmd.Flags().Int64Var(&maxReplicas, "max-replicas", 0, "upper bound of a service's replicas")
	cmd.Flags().StringVar(&restartGrace, "restart-grace", "", "how long a node restarting on purpose keeps its tasks, e.g. 60s")
	cmd.Flags().Int64Var(&historyLimit, "task-history-limit", 0, "ended tasks kept per slot (per node for global services) before the oldest are deleted (default 5)")
	cmd.Flags().BoolVar(&rotateGossip, "rotate-gossip-key", false, "make a new gossip encryption key the one in use (the previous one stays accepted until the next rotation)")
	return cmd
}

// settingDuration shows a duration setting in milliseconds, naming the
// default it stands for when unset (0).
func settingDuration(ms int64, def time.Duration) string {
	if ms <= 0 {
		return fmt.Sprintf("%s (default)", def)
	}
	return (time.Duration(ms) * time.Millisecond).String()
}

// settingInt shows a count setting, naming the default when unset (0).
func settingInt(n int64, def int) string {
	if n <= 0 {
		return fmt.Sprintf("%d (default)", def)
	}
	return fmt.Sprint(n)
}
