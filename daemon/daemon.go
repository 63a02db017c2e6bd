package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	shoalruntime "github.com/shoal-dev/shoal/agent/runtime"
	"github.com/shoal-dev/shoal/datadir"
	"github.com/shoal-dev/shoal/manager"

	"github.com/shoal-dev/shoal/manager/nodeca"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

// Options are what the node verbs take: their flags (set by an operator
// through cmd/shoal), where output goes, and Seams, which only tests set.
type Options struct {
	DataDir       string
	AdvertiseAddr string // host[:port]; port defaults to 4242
	ListenAddr    string // host:port; defaults to the advertise address
	JoinAddr      string // join: a manager's host[:port]
	Token         string // join
	ClusterName   string // init
	NodeName      string // optional node name (defaults to the hostname)
	Out           io.Writer
	Logger        *slog.Logger

	// Agent side; the first five are kept in node.json for `shoal daemon`.
	AgentAddr          string   // host:port of the agent API (default: advertise host, port+1)
	Bridge             string   // node bridge for tasks (default shoal0)
	BridgeSubnet       string   // its subnet (default 10.213.0.0/24)
	InsecureRegistries []string // registries that may be pulled from over http
	CgroupParent       string   // cgroup under which task cgroups live (default /shoal)
	LoadImages         []string // image archives loaded into the node's store at start
	// MaxLayerBytes and MaxLayerEntries bound what one image layer may
	// unpack to (0: the image store's defaults, 16 GiB and 1,000,000).
	MaxLayerBytes   int64
	MaxLayerEntries int
	// NoExecutor (--no-executor, hidden) runs the node's agent with
	// nullexec instead of the container executor: assignments are taken
	// and reported but nothing runs, no image store, node network or agent
	// API is set up. For benchmarks and tests of the control plane alone,
	// where tasks stay ASSIGNED.
	NoExecutor bool
	// GossipPort is the node's memberlist port (TCP and UDP) on its
	// advertise IP: 0 for 7946, -1 for no gossip (heartbeats alone decide).
	GossipPort int
	// NoGossipHints: this node neither gossips endpoint hints nor applies
	// those it receives (the managers' network state alone programs its
	// overlay; for comparisons).
	NoGossipHints bool
	// MetricsAddr (--metrics-addr) is IP[:PORT] (default port 9323) where
	// the node serves /metrics over mutual TLS; "" (default): not served
	// (managers still serve it on their HTTPS API).
	MetricsAddr string
	// HTTPAddr is where a manager serves the HTTPS JSON API: empty for
	// the advertise host and port + 2 (4244), HTTPOff for none.
	HTTPAddr string
	// HTTPCORSOrigins are the origins allowed cross-origin API calls.
	HTTPCORSOrigins []string

	// Seams replace parts of the node in tests; no flag sets them.
	Seams Seams

	dev bool // `shoal dev`: print the dev hint instead of join instructions
}

// Seams are what only tests set on a node.
type Seams struct {
	// Runtime replaces the libcontainer runtime.
	Runtime shoalruntime.Runtime
	// NoTaskNetwork leaves each task with a private loopback-only netns.
	NoTaskNetwork bool
}

func (o *Options) normalize() error {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if o.DataDir == "" {
		return errors.New("--data-dir: required")
	}
	if o.AdvertiseAddr != "" {
		a, err := withPort(o.AdvertiseAddr, "--advertise-addr")
		if err != nil {
			return err
		}
		o.AdvertiseAddr = a
	}
	var err error
	if o.MetricsAddr, err = metricsAddr(o.MetricsAddr); err != nil {
		return err
	}
	if o.ListenAddr == "" {
		o.ListenAddr = o.AdvertiseAddr
	} else {
		a, err := withPort(o.ListenAddr, "--listen-addr")
		if err != nil {
			return err
		}
		o.ListenAddr = a
	}
	return nil
}

func (o *Options) freshDataDir() error {
	if datadir.Exists(o.DataDir) {
		return fmt.Errorf("%s already holds a node; start it with `shoal daemon --data-dir %s` or use another --data-dir", o.DataDir, o.DataDir)
	}
	return os.MkdirAll(o.DataDir, 0o700)
}

// Init bootstraps a new cluster whose first manager is this node, prints the
// join tokens, and runs the node until ctx ends.
func Init(ctx context.Context, o Options) error {
	if err := o.normalize(); err != nil {
		return err
	}
	if o.AdvertiseAddr == "" {
		return errors.New("--advertise-addr: required (the IP other nodes reach this one at)")
	}
	if err := o.freshDataDir(); err != nil {
		return err
	}
	clusterID, nodeID := raftstore.NewID(), raftstore.NewID()
	root, err := trust.NewRootCA(clusterID)
	if err != nil {
		return err
	}
	creds, nodeSerial, err := issue(root, nodeID, trust.RoleManager)
	if err != nil {
		return err
	}
	// The admin certificate init writes is the first admin certificate
	// object: listed, revocable, refused once revoked.
	adminCert, adminKey, err := root.IssueAdmin("admin", 5*365*24*time.Hour)
	if err != nil {
		return err
	}
	dd := datadir.Dir(o.DataDir)
	if err := trust.SaveCreds(dd.Admin(), "admin", &trust.Creds{CACertPEM: root.CertPEM(), CertPEM: adminCert, KeyPEM: adminKey}); err != nil {
		return err
	}
	boot, err := manager.NewBootstrap(manager.BootstrapConfig{
		ClusterID: clusterID, ClusterName: o.ClusterName, Root: root, AdminCertPEM: adminCert,
		NodeID: nodeID, NodeName: o.NodeName, NodeAddr: o.AdvertiseAddr, NodeCertSerial: nodeSerial, Description: describe(o.NodeName),
	})
	if err != nil {
		return err
	}
	// The bootstrap objects (CA key included) wait on disk, private, until
	// raft has committed them, so a crash in between is healed on restart.
	if err := boot.Save(dd.BootstrapFile()); err != nil {
		return err
	}
	if err := trust.SaveCreds(datadir.Dir(o.DataDir).Certs(), "node", creds); err != nil {
		return err
	}
	st := &datadir.Node{NodeID: nodeID, ClusterID: clusterID, AdvertiseAddr: o.AdvertiseAddr, ListenAddr: o.ListenAddr,
		Role: string(trust.RoleManager), Managers: []string{o.AdvertiseAddr}}
	if err := st.Save(o.DataDir); err != nil {
		return err
	}
	return runNode(ctx, o, st, true)
}

func issue(root *trust.CA, nodeID string, role trust.Role) (*trust.Creds, string, error) {
	keyPEM, csrPEM, err := trust.NewKeyAndCSR()
	if err != nil {
		return nil, "", err
	}
	certPEM, serial, err := root.SignCSR(csrPEM, nodeID, role, nodeca.DefaultCertTTL)
	if err != nil {
		return nil, "", err
	}
	return &trust.Creds{CACertPEM: root.CertPEM(), CertPEM: certPEM, KeyPEM: keyPEM}, serial, nil
}

// Join admits this node into a cluster with a join token and runs it.
func Join(ctx context.Context, o Options) error {
	if err := o.normalize(); err != nil {
		return err
	}
	if o.AdvertiseAddr == "" {
		return errors.New("--advertise-addr: required (the IP other nodes reach this one at)")
	}
	remote, err := withPort(o.JoinAddr, "manager address")
	if err != nil {
		return err
	}
	if o.Token == "" {
		return errors.New("--token: required")
	}
	if err := o.freshDataDir(); err != nil {
		return err
	}
	creds, resp, err := trust.JoinCredentials(ctx, remote, o.Token, describe(o.NodeName), o.AdvertiseAddr)
	if err != nil {
		os.Remove(o.DataDir) // only removes it if still empty
		return fmt.Errorf("joining via %s: %w", remote, err)
	}
	if err := trust.SaveCreds(datadir.Dir(o.DataDir).Certs(), "node", creds); err != nil {
		return err
	}
	id, err := creds.Identity()
	if err != nil {
		return err
	}
	st := &datadir.Node{NodeID: resp.GetNodeId(), ClusterID: id.ClusterID, AdvertiseAddr: o.AdvertiseAddr, ListenAddr: o.ListenAddr,
		Role: string(trust.RoleFromProto(resp.GetRole())), Managers: []string{remote}}
	if err := st.Save(o.DataDir); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "This node joined cluster %s as a %s (node id %s).\n", st.ClusterID, st.Role, st.NodeID)
	return runNode(ctx, o, st, false)
}

// Run restarts an existing node from its data dir.
func Run(ctx context.Context, o Options) error {
	if err := o.normalize(); err != nil {
		return err
	}
	st, err := datadir.Load(o.DataDir)
	if err != nil {
		return err
	}
	if o.ListenAddr != "" && o.ListenAddr != st.ListenAddr {
		st.ListenAddr = o.ListenAddr
	}
	_, statErr := os.Stat(datadir.Dir(o.DataDir).BootstrapFile())
	return runNode(ctx, o, st, statErr == nil)
}

// describe reports this machine to the managers.
func describe(name string) *shoalv1.NodeDescription {
	host := name
	if host == "" {
		host, _ = os.Hostname()
	}
	return &shoalv1.NodeDescription{
		Hostname: host, Os: runtime.GOOS, Arch: runtime.GOARCH, EngineVersion: Version,
		// The raft entry forms this binary's manager reads (the leader's
		// gate for rolling upgrades; reported by workers too, which may
		// be promoted).
		StoreFormat: raftstore.StoreFormat,
		Resources:   &shoalv1.Resources{NanoCpus: int64(runtime.NumCPU()) * 1e9, MemoryBytes: memTotal()},
	}
}

// Version is the shoal version reported by nodes.
var Version = "0.1.0-dev"

// memTotal reads MemTotal from /proc/meminfo (0 when unknown).
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}
