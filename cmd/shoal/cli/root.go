// Package cli is shoal's command line: noun-verb client commands that talk
// to a manager's API (docker-like: `shoal service create`, `shoal node ls`)
// and the node verbs that run a node (`shoal init|join|daemon|dev`).
//
// Output goes to injectable writers; list and inspect commands print tables
// (text/tabwriter) or, with --format json, protojson. Commands that change
// a service wait for its tasks to converge, following the watch stream,
// unless --detach.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/client"
	"github.com/shoal-dev/shoal/daemon"
)

// app holds the global flags and the output writers.
type app struct {
	out, errOut io.Writer
	dataDir     string
	hosts       string
	certDir     string
	logLevel    string
	timeout     time.Duration
	// readyWait bounds how long a call waits for a manager that refuses
	// connections or says it is not ready (client.Config.ReadyWait).
	readyWait time.Duration
	// cacheDir keeps what the CLI remembers between commands (registries
	// that did not answer); "" is the user's cache dir + /shoal.
	cacheDir string
}

// Main runs the command line and returns the exit code.
func Main(ctx context.Context, args []string, out, errOut io.Writer) int {
	root := NewRootCommand(out, errOut)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		if ee, ok := errors.AsType[exitError](err); ok {
			return ee.code // task exec: the command's own exit code
		}
		fmt.Fprintln(errOut, "Error:", errorMessage(err))
		return 1
	}
	return 0
}

// errorMessage shows a server error without the gRPC wrapping. Refusals
// and transport failures keep a short word for their kind, so that an
// operator can tell "you may not" from "could not reach".
func errorMessage(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	msg := st.Message()
	prefix := ""
	switch st.Code() {
	case codes.PermissionDenied:
		prefix = "permission denied"
	case codes.Unauthenticated:
		prefix = "not authenticated"
	case codes.Unavailable:
		prefix = "unavailable"
	case codes.DeadlineExceeded:
		prefix = "timed out"
	}
	if prefix == "" || strings.HasPrefix(strings.ToLower(msg), prefix) {
		return msg
	}
	return prefix + ": " + msg
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// NewRootCommand builds the command tree.
func NewRootCommand(out, errOut io.Writer) *cobra.Command {
	a := &app{out: out, errOut: errOut, cacheDir: os.Getenv("SHOAL_CACHE_DIR")}
	root := &cobra.Command{
		Use:           "shoal",
		Short:         "Shoal container orchestrator",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	root.SetErr(errOut)
	pf := root.PersistentFlags()
	pf.StringVar(&a.dataDir, "data-dir", envOr("SHOAL_DATA_DIR", "/var/lib/shoal"), "node data dir (env SHOAL_DATA_DIR)")
	pf.StringVar(&a.hosts, "host", os.Getenv("SHOAL_HOST"), "manager address(es) host:port, comma-separated (env SHOAL_HOST)")
	pf.StringVar(&a.certDir, "cert-dir", os.Getenv("SHOAL_CERT_DIR"), "dir with ca.crt, admin.crt, admin.key (env SHOAL_CERT_DIR)")
	pf.StringVar(&a.logLevel, "log-level", "info", "log level of node verbs: debug, info, warn, error")
	pf.DurationVar(&a.timeout, "timeout", 30*time.Second, "timeout of each API call")
	// A script waiting for a node to come up gives a longer --ready-wait;
	// an operator at a terminal wants to hear at once that nothing answers.
	pf.DurationVar(&a.readyWait, "ready-wait", 2*time.Second, "how long a call waits while no manager can serve it yet (every address refuses connections or says it is not ready; a manager that is not ready is failed over from) before it fails saying why; at most --timeout")
	root.AddCommand(a.nodeVerbs()...)
	root.AddCommand(a.nodeCmd(), a.serviceCmd(), a.networkCmd(), a.taskCmd(), a.clusterCmd(), a.tokenCmd(), a.joinTokenCmd(), a.eventsCmd(), a.versionCmd())
	a.addLogsAndImages(root)
	a.addStats(root)
	root.AddCommand(a.adminCertCmd())
	root.AddCommand(a.debugCmd())
	root.AddCommand(a.benchCmd())
	return root
}

func (a *app) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(a.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(a.errOut, &slog.HandlerOptions{Level: lvl})), nil
}

// dial connects to the managers with the global flags.
func (a *app) dial(ctx context.Context) (*client.Client, error) {
	cfg := client.Config{CertDir: a.certDir, ReadyWait: a.readyWait}
	if cfg.ReadyWait <= 0 || cfg.ReadyWait > a.timeout {
		cfg.ReadyWait = 0 // bounded by --timeout alone
	}
	if a.hosts != "" {
		for _, h := range strings.Split(a.hosts, ",") {
			if h = strings.TrimSpace(h); h != "" {
				if !strings.Contains(h, ":") {
					h += ":4242"
				}
				cfg.Hosts = append(cfg.Hosts, h)
			}
		}
	}
	if cfg.CertDir == "" || len(cfg.Hosts) == 0 {
		cfg.DataDir = a.dataDir
	}
	return client.Dial(ctx, cfg)
}

// call returns a context bounded by --timeout for one API call.
func (a *app) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.timeout)
}

func (a *app) nodeVerbs() []*cobra.Command {
	var o daemon.Options
	bind := func(c *cobra.Command, join bool) {
		c.Flags().StringVar(&o.AdvertiseAddr, "advertise-addr", "", "IP[:PORT] other nodes reach this one at")
		c.Flags().StringVar(&o.ListenAddr, "listen-addr", "", "IP:PORT to listen on (default: the advertise address)")
		c.Flags().StringVar(&o.NodeName, "node-name", "", "node name (default: the hostname)")
		if join {
			c.Flags().StringVar(&o.Token, "token", "", "join token (shoal token show worker|manager)")
		}
		bindAgent(c, &o)
	}
	run := func(fn func(context.Context, daemon.Options) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			log, err := a.logger()
			if err != nil {
				return err
			}
			o.DataDir, o.Out, o.Logger = a.dataDir, a.out, log
			if f := cmd.Flags().Lookup("http-addr"); f != nil && f.Changed && o.HTTPAddr == "" {
				o.HTTPAddr = daemon.HTTPOff // --http-addr "" disables, as "off" does
			}
			if len(args) == 1 {
				o.JoinAddr = args[0]
			}
			return fn(cmd.Context(), o)
		}
	}
	initCmd := &cobra.Command{Use: "init", Short: "Bootstrap a new cluster with this node as its first manager", Args: cobra.NoArgs, RunE: run(daemon.Init)}
	bind(initCmd, false)
	initCmd.Flags().StringVar(&o.ClusterName, "cluster-name", "", "cluster name")
	joinCmd := &cobra.Command{Use: "join --token TOKEN MANAGER[:PORT]", Short: "Join a cluster as a worker or manager (the token decides)", Args: cobra.ExactArgs(1), RunE: run(daemon.Join)}
	bind(joinCmd, true)
	daemonCmd := &cobra.Command{Use: "daemon", Short: "Run an existing node from its data dir (after a restart)", Args: cobra.NoArgs, RunE: run(daemon.Run)}
	daemonCmd.Flags().StringVar(&o.ListenAddr, "listen-addr", "", "IP:PORT to listen on")
	bindAgent(daemonCmd, &o)
	devCmd := &cobra.Command{Use: "dev", Short: "Run a one-node cluster (manager + agent) for trying shoal out", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("data-dir") && os.Getenv("SHOAL_DATA_DIR") == "" {
				a.dataDir = "" // a fresh temp dir
			}
			return run(daemon.Dev)(cmd, args)
		}}
	bind(devCmd, false)
	return []*cobra.Command{initCmd, joinCmd, daemonCmd, devCmd}
}

// bindAgent adds the flags of a node's agent side.
func bindAgent(c *cobra.Command, o *daemon.Options) {
	f := c.Flags()
	f.StringVar(&o.AgentAddr, "agent-addr", "", "IP:PORT of this node's agent API (default: advertise IP, port+1)")
	f.StringVar(&o.Bridge, "bridge", "", "bridge the node's tasks are attached to (default shoal0)")
	f.StringVar(&o.BridgeSubnet, "bridge-subnet", "", "subnet of that bridge (default 10.213.0.0/24)")
	f.StringArrayVar(&o.InsecureRegistries, "insecure-registry", nil, "HOST:PORT of a registry that may be pulled from over plain http (repeatable)")
	f.StringVar(&o.CgroupParent, "cgroup-parent", "", "cgroup (in every hierarchy) under which task cgroups are made (default /shoal)")
	f.StringArrayVar(&o.LoadImages, "load-image", nil, "image archive (OCI layout/archive or docker save) to load at start (repeatable)")
	f.Var(sizeFlag{&o.MaxLayerBytes}, "max-layer-bytes", "most file bytes one image layer may unpack to, e.g. 16g (default 16GiB)")
	f.IntVar(&o.MaxLayerEntries, "max-layer-entries", 0, "most entries one image layer may hold (default 1000000)")
	f.StringVar(&o.MetricsAddr, "metrics-addr", "", "IP[:PORT] to serve Prometheus /metrics on over mutual TLS, admin or manager certificates (default port 9323; default: off)")
	f.StringVar(&o.HTTPAddr, "http-addr", "", `IP:PORT of a manager's HTTPS JSON API (default: advertise IP, port+2, i.e. 4244; "" or off: none)`)
	f.StringArrayVar(&o.HTTPCORSOrigins, "http-cors-origin", nil, "origin allowed cross-origin calls to the HTTPS API, e.g. https://dash.example (repeatable; default: none)")
	f.IntVar(&o.GossipPort, "gossip-port", 0, "TCP and UDP port of this node's gossip membership on its advertise IP (default 7946; -1: no gossip)")
	// For comparisons: the overlay programmed by the managers' state alone.
	f.BoolVar(&o.NoGossipHints, "no-gossip-hints", false, "neither gossip endpoint hints nor apply received ones")
	_ = f.MarkHidden("no-gossip-hints")
	// For benchmarks and tests of the control plane alone: tasks stay
	// ASSIGNED and nothing is created on the host.
	f.BoolVar(&o.NoExecutor, "no-executor", false, "run no tasks (control-plane tests)")
	_ = f.MarkHidden("no-executor")
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{Use: "version", Short: "Print the version", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintln(a.out, "shoal", daemon.Version)
			return nil
		}}
}
