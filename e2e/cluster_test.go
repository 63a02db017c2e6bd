package e2e

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Deadlines. Generous: they bound waits, they are not performance claims.
const (
	poll          = 200 * time.Millisecond
	startTimeout  = 60 * time.Second // a node process from start to READY
	settleTimeout = 60 * time.Second // orchestration / replication to converge
	attemptLimit  = 10 * time.Second // one CLI call inside a poll loop
)

// testImage is the demo image every node loads at start (harness.NodeFlags):
// tasks run it as real containers (its default command is an HTTP server).
const testImage = harness.DemoImageName

// cluster is a shoal cluster on a fabric: hosts h1..hN, h1 the first
// manager (init), then the other managers, then the workers.
type cluster struct {
	t        testing.TB
	f        *harness.Fabric
	hosts    []*harness.Host
	managers []*harness.Host
	workers  []*harness.Host
	// adminDir holds the admin credentials init wrote on h1.
	adminDir     string
	workerToken  string
	managerToken string
	// nodeIDs maps hosts to node ids (from node.json).
	nodeIDs map[*harness.Host]string
}

// newCluster starts a cluster of nManagers managers (≥ 1) and nWorkers
// workers and waits until every node is READY.
func newCluster(t testing.TB, nManagers, nWorkers int) *cluster {
	t.Helper()
	return newClusterWith(t, nManagers, nWorkers, nil)
}

// newClusterWith is newCluster with extra flags for the workers' `shoal
// join` (--insecure-registry, say).
func newClusterWith(t testing.TB, nManagers, nWorkers int, workerFlags []string) *cluster {
	t.Helper()
	f := harness.NewFabric(t)
	harness.Binary(t) // build before anything is timed
	c := &cluster{t: t, f: f, nodeIDs: map[*harness.Host]string{}}
	start := time.Now()
	h1 := c.addHost()
	c.initFirst(h1)
	for range nManagers - 1 {
		c.join(c.addHost(), c.managerToken, shoalv1.NodeRole_NODE_ROLE_MANAGER)
	}
	for range nWorkers {
		c.join(c.addHost(), c.workerToken, shoalv1.NodeRole_NODE_ROLE_WORKER, workerFlags...)
	}
	t.Logf("cluster of %d managers + %d workers ready in %v", nManagers, nWorkers, time.Since(start).Round(time.Millisecond))
	return c
}

func (c *cluster) addHost() *harness.Host {
	h := c.f.AddHost(fmt.Sprintf("h%d", len(c.hosts)+1))
	c.hosts = append(c.hosts, h)
	return h
}

// initFirst runs `shoal init` on h and waits for the join tokens and for
// the node to be READY.
func (c *cluster) initFirst(h *harness.Host, extra ...string) {
	t := c.t
	t.Helper()
	p := h.Init(t, append([]string{"--node-name", h.Name}, extra...)...)
	c.adminDir = h.AdminCertDir()
	c.managers = append(c.managers, h)
	c.waitNodeID(h, p)
	harness.Eventually(t, startTimeout, poll, func() error {
		if err := p.CheckRunning(); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), attemptLimit)
		defer cancel()
		var err error
		if c.workerToken, err = c.token(ctx, h.Local(), "worker"); err != nil {
			return err
		}
		c.managerToken, err = c.token(ctx, h.Local(), "manager")
		return err
	})
	if c.workerToken == c.managerToken {
		t.Fatalf("worker and manager tokens are the same: %s", c.workerToken)
	}
	c.waitNodes(h, func(nodes []*shoalv1.Node) error { return c.nodeReady(nodes, h, shoalv1.NodeRole_NODE_ROLE_MANAGER) })
}

// waitNodeID waits until h's node process has written node.json (its
// node id is then known) while p keeps running.
func (c *cluster) waitNodeID(h *harness.Host, p *harness.Proc) {
	c.t.Helper()
	harness.Eventually(c.t, startTimeout, poll, func() error {
		if err := p.CheckRunning(); err != nil {
			return err
		}
		st, err := h.State()
		if err != nil {
			return err
		}
		c.nodeIDs[h] = st.NodeID
		return nil
	})
}

// token runs `token show ROLE` and extracts the token.
func (c *cluster) token(ctx context.Context, cl *harness.Client, role string) (string, error) {
	out, err := cl.Run(ctx, "token", "show", role)
	if err != nil {
		return "", err
	}
	return harness.FindToken(out)
}

// join runs `shoal join [extra...]` on h against h1 and waits until the
// node is READY with the expected role.
func (c *cluster) join(h *harness.Host, token string, role shoalv1.NodeRole, extra ...string) {
	t := c.t
	t.Helper()
	p := h.Join(t, token, c.hosts[0].Addr(), append([]string{"--node-name", h.Name}, extra...)...)
	if role == shoalv1.NodeRole_NODE_ROLE_MANAGER {
		c.managers = append(c.managers, h)
	} else {
		c.workers = append(c.workers, h)
	}
	c.waitNodeID(h, p)
	c.waitNodes(c.hosts[0], func(nodes []*shoalv1.Node) error {
		if err := p.CheckRunning(); err != nil {
			return err
		}
		return c.nodeReady(nodes, h, role)
	})
}

// admin is a client running on via that talks to via's own manager API
// with the admin credentials.
func (c *cluster) admin(via *harness.Host) *harness.Client {
	return via.Remote(c.adminDir, via.Addr())
}

// nodes lists the nodes through via's manager.
func (c *cluster) nodes(ctx context.Context, via *harness.Host) ([]*shoalv1.Node, error) {
	return harness.List[shoalv1.Node](ctx, c.admin(via), "node", "ls")
}

// waitNodes polls `node ls` through via until check accepts the list.
func (c *cluster) waitNodes(via *harness.Host, check func([]*shoalv1.Node) error) []*shoalv1.Node {
	c.t.Helper()
	var last []*shoalv1.Node
	harness.Eventually(c.t, settleTimeout, poll, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), attemptLimit)
		defer cancel()
		nodes, err := c.nodes(ctx, via)
		if err != nil {
			return err
		}
		if err := check(nodes); err != nil {
			return fmt.Errorf("%w\nnodes: %s", err, describeNodes(nodes))
		}
		last = nodes
		return nil
	})
	return last
}

// hostOf maps a node id back to its host (nil if unknown).
func (c *cluster) hostOf(nodeID string) *harness.Host {
	for h, id := range c.nodeIDs {
		if id == nodeID {
			return h
		}
	}
	return nil
}

func (c *cluster) id(h *harness.Host) string {
	id, ok := c.nodeIDs[h]
	if !ok {
		c.t.Fatalf("no node id known for %s", h)
	}
	return id
}

func findNode(nodes []*shoalv1.Node, id string) *shoalv1.Node {
	for _, n := range nodes {
		if n.GetMeta().GetId() == id {
			return n
		}
	}
	return nil
}

// nodeReady checks that h's node is listed, READY, with role role (and a
// manager status when a manager).
func (c *cluster) nodeReady(nodes []*shoalv1.Node, h *harness.Host, role shoalv1.NodeRole) error {
	id := c.nodeIDs[h]
	n := findNode(nodes, id)
	switch {
	case n == nil:
		return fmt.Errorf("node %s of %s not listed", id, h)
	case n.GetStatus().GetState() != shoalv1.NodeState_NODE_STATE_READY:
		return fmt.Errorf("node %s of %s is %s, want READY", id, h, n.GetStatus().GetState())
	case n.GetRole() != role:
		return fmt.Errorf("node %s of %s has role %s, want %s", id, h, n.GetRole(), role)
	case role == shoalv1.NodeRole_NODE_ROLE_MANAGER && n.GetManagerStatus() == nil:
		return fmt.Errorf("manager node %s of %s has no manager_status", id, h)
	}
	return nil
}

// leaderOf returns the one node whose manager status says leader.
func leaderOf(nodes []*shoalv1.Node) (*shoalv1.Node, error) {
	var leaders []*shoalv1.Node
	for _, n := range nodes {
		if n.GetManagerStatus().GetLeader() {
			leaders = append(leaders, n)
		}
	}
	if len(leaders) != 1 {
		return nil, fmt.Errorf("%d nodes say leader, want 1", len(leaders))
	}
	return leaders[0], nil
}

// leader waits until the managers agree on one leader, as seen through via,
// optionally other than not, and returns its host.
func (c *cluster) leader(via *harness.Host, not *harness.Host) *harness.Host {
	c.t.Helper()
	var lh *harness.Host
	c.waitNodes(via, func(nodes []*shoalv1.Node) error {
		l, err := leaderOf(nodes)
		if err != nil {
			return err
		}
		lh = c.hostOf(l.GetMeta().GetId())
		if lh == nil {
			return fmt.Errorf("leader %s is no known host", l.GetMeta().GetId())
		}
		if lh == not {
			return fmt.Errorf("leader is still %s", not)
		}
		return nil
	})
	return lh
}

func describeNodes(nodes []*shoalv1.Node) string {
	var parts []string
	for _, n := range nodes {
		s := fmt.Sprintf("%s %s %s %s %s", n.GetSpec().GetName(), n.GetMeta().GetId(), n.GetStatus().GetAddr(),
			strings.TrimPrefix(n.GetRole().String(), "NODE_ROLE_"), strings.TrimPrefix(n.GetStatus().GetState().String(), "NODE_STATE_"))
		if ms := n.GetManagerStatus(); ms != nil {
			s += fmt.Sprintf(" leader=%v reach=%q", ms.GetLeader(), ms.GetReachability())
		}
		parts = append(parts, "["+s+"]")
	}
	return strings.Join(parts, " ")
}

// ---------------------------------------------------------------- services

// createService runs `service create --name NAME --replicas N --detach
// --no-resolve-image demo:latest [ARG...]` through cl. The image is only
// loaded on the nodes, so asking a registry for its digest would only cost
// the lookup's timeout.
func createService(ctx context.Context, cl *harness.Client, name string, replicas int, args ...string) error {
	return createServiceFlags(ctx, cl, name, replicas, nil, args...)
}

// createServiceFlags is createService with more flags before the image
// (--constraint, --restart-condition, ...).
func createServiceFlags(ctx context.Context, cl *harness.Client, name string, replicas int, flags []string, args ...string) error {
	_, err := cl.Run(ctx, slices.Concat([]string{"service", "create", "--name", name, "--replicas", fmt.Sprint(replicas),
		"--detach", "--no-resolve-image"}, flags, []string{testImage}, args)...)
	return err
}

var unknownDetach = regexp.MustCompile(`unknown (flag|shorthand flag).*detach`)

// runDetached runs a command that may wait for convergence with --detach
// (the test waits for what it wants itself), or without it if this command
// has no such flag.
func runDetached(ctx context.Context, cl *harness.Client, args ...string) (string, error) {
	out, err := cl.Run(ctx, slices.Concat(args, []string{"--detach"})...)
	var ee *harness.ExecError
	if errors.As(err, &ee) && unknownDetach.MatchString(ee.Stderr+ee.Stdout) {
		return cl.Run(ctx, args...)
	}
	return out, err
}

// alreadyExists recognises the answer to a create whose name is taken.
var alreadyExists = regexp.MustCompile(`(?i)already ?exists|AlreadyExists`)

func services(ctx context.Context, cl *harness.Client) ([]*shoalv1.Service, error) {
	return harness.List[shoalv1.Service](ctx, cl, "service", "ls")
}

func serviceNames(svcs []*shoalv1.Service) map[string]bool {
	names := map[string]bool{}
	for _, s := range svcs {
		names[s.GetSpec().GetName()] = true
	}
	return names
}

func serviceTasks(ctx context.Context, cl *harness.Client, name string) ([]*shoalv1.Task, error) {
	return harness.List[shoalv1.Task](ctx, cl, "service", "ps", name)
}

func allTasks(ctx context.Context, cl *harness.Client) ([]*shoalv1.Task, error) {
	return harness.List[shoalv1.Task](ctx, cl, "task", "ls")
}

// live keeps the tasks that are live (docs/task-states.md): desired state
// at most RUNNING and observed state before COMPLETE.
func live(tasks []*shoalv1.Task) []*shoalv1.Task { return harness.LiveTasks(tasks) }

// perNode counts tasks by node id ("" for unassigned).
func perNode(tasks []*shoalv1.Task) map[string]int {
	m := map[string]int{}
	for _, tk := range tasks {
		m[tk.GetNodeId()]++
	}
	return m
}

func describeTasks(tasks []*shoalv1.Task) string { return harness.DescribeTasks(tasks) }

// attempt is a context for one call inside a poll loop.
func attempt() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), attemptLimit)
}
