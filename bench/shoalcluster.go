package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

const shoalPort = "4242"

// shoalNode is one `shoal` process of a benchmark cluster.
type shoalNode struct {
	name    string // m1, m2, ..., w1
	ip      string
	addr    string // ip:4242
	dataDir string
	logPath string
	worker  bool
	proc    *proc
	down    bool // killed on purpose, not restarted yet
}

// shoalCluster is a cluster of real shoal processes on loopback addresses.
type shoalCluster struct {
	e        *env
	nodes    []*shoalNode // managers first (nodes[0] ran init), then the worker
	adminDir string
	tokens   *shoalv1.JoinTokens
}

func (c *shoalCluster) managers() []*shoalNode {
	var ms []*shoalNode
	for _, n := range c.nodes {
		if !n.worker {
			ms = append(ms, n)
		}
	}
	return ms
}

func (c *shoalCluster) managerAddrs() []string {
	var as []string
	for _, n := range c.managers() {
		as = append(as, n.addr)
	}
	return as
}

// stop kills every node of the cluster.
func (c *shoalCluster) stop() {
	for _, n := range c.nodes {
		if err := c.e.sup.kill(n.proc); err != nil {
			c.e.logf("%v", err)
		}
	}
}

// checkAlive fails when a node that should be running has exited.
func (c *shoalCluster) checkAlive() error {
	for _, n := range c.nodes {
		if n.proc == nil || n.down {
			continue
		}
		if done, err := n.proc.exited(); done {
			return fmt.Errorf("shoal node %s (%s) exited: %v; last lines of %s:\n%s", n.name, n.addr, err, n.logPath, tail(n.logPath, 30))
		}
	}
	return nil
}

// startShoal starts a cluster of `managers` managers on ips[0..managers-1]
// and, when workerIP is not empty, one worker, and waits until every
// manager is a raft voter, there is a leader, and every node is READY.
func startShoal(ctx context.Context, e *env, label string, managers int, ips []string, workerIP string) (*shoalCluster, error) {
	if managers < 1 || managers > len(ips) {
		return nil, fmt.Errorf("%d managers: need 1..%d (see -shoal-ips)", managers, len(ips))
	}
	root := filepath.Join(e.dir, label)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	c := &shoalCluster{e: e}
	for i := 0; i < managers; i++ {
		c.nodes = append(c.nodes, newShoalNode(root, fmt.Sprintf("m%d", i+1), ips[i], false))
	}
	if workerIP != "" {
		c.nodes = append(c.nodes, newShoalNode(root, "w1", workerIP, true))
	}
	for _, n := range c.nodes {
		if err := checkFree(n.ip, shoalPort); err != nil {
			return nil, err
		}
	}
	ok := false
	defer func() {
		if !ok {
			c.stop()
		}
	}()

	first := c.nodes[0]
	c.adminDir = filepath.Join(first.dataDir, "admin")
	initOut := &syncBuffer{}
	e.logf("%s: shoal init on %s", label, first.addr)
	var err error
	first.proc, err = e.sup.startEnv(label+"/"+first.name, first.logPath, initOut, e.nodeEnv(first), e.shoalBin,
		e.nodeArgs("init", "--data-dir", first.dataDir, "--advertise-addr", first.ip)...)
	if err != nil {
		return nil, err
	}
	e.addLog(first.logPath)

	// The API answers once raft has elected the single voter.
	var resp *shoalv1.GetClusterResponse
	err = c.poll(ctx, 60*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
		resp, err = c.getCluster(ctx, first.addr)
		if err != nil {
			return err
		}
		if resp.GetLeaderId() == "" {
			return errors.New("no leader yet")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for the first manager's API: %w", err)
	}
	c.tokens = resp.GetCluster().GetTokens()
	if c.tokens.GetManager() == "" || c.tokens.GetWorker() == "" {
		c.tokens = c.findTokens(ctx, initOut)
	}
	if c.tokens.GetManager() == "" || c.tokens.GetWorker() == "" {
		return nil, fmt.Errorf("no join tokens: GetCluster has none, `shoal init` printed none, `shoal token show` gave none; init's output:\n%s", initOut.String())
	}

	for i, n := range c.nodes[1:] {
		tok := c.tokens.GetManager()
		if n.worker {
			tok = c.tokens.GetWorker()
		}
		e.logf("%s: shoal join %s as %s", label, n.addr, map[bool]string{true: "worker", false: "manager"}[n.worker])
		n.proc, err = e.sup.startEnv(label+"/"+n.name, n.logPath, nil, e.nodeEnv(n), e.shoalBin,
			e.nodeArgs("join", "--data-dir", n.dataDir, "--advertise-addr", n.ip, "--token", tok, first.addr)...)
		if err != nil {
			return nil, err
		}
		e.addLog(n.logPath)
		if !n.worker {
			// Join managers one at a time: raft changes its configuration
			// one server at a time.
			if err := c.waitVoters(ctx, i+2); err != nil {
				return nil, err
			}
		}
	}
	if err := c.waitHealthy(ctx); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// nodeArgs adds the flags every node verb of the control-plane
// benchmarks gets. Their nodes run no tasks (--no-executor): the figures
// are the control plane's, and no container or bridge is made on the host.
func (e *env) nodeArgs(args ...string) []string {
	return append(append(args, "--no-executor"), e.logArgs()...)
}

func (e *env) logArgs() []string {
	if e.o.logLevel != "" {
		return []string{"--log-level", e.o.logLevel}
	}
	return nil
}

func newShoalNode(root, name, ip string, worker bool) *shoalNode {
	return &shoalNode{
		name: name, ip: ip, addr: net.JoinHostPort(ip, shoalPort), worker: worker,
		dataDir: filepath.Join(root, name), logPath: filepath.Join(root, name+".log"),
	}
}

// checkFree fails when something already listens on ip:port (another
// cluster on the same loopback addresses).
func checkFree(ip, port string) error {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, port))
	if err != nil {
		return fmt.Errorf("%s:%s is taken (is another cluster running on these addresses? see the -*-ips flags): %w", ip, port, err)
	}
	return l.Close()
}

var tokenRE = regexp.MustCompile(`SHOAL-1-[A-Za-z0-9_-]+`)

// findTokens is the fallback when GetCluster does not return the tokens:
// init's output names the worker token first, the manager token second;
// `shoal token show ROLE` is the last resort.
func (c *shoalCluster) findTokens(ctx context.Context, initOut *syncBuffer) *shoalv1.JoinTokens {
	t := &shoalv1.JoinTokens{}
	role := ""
	for _, line := range strings.Split(initOut.String(), "\n") {
		l := strings.ToLower(line)
		switch {
		case strings.Contains(l, "worker"):
			role = "worker"
		case strings.Contains(l, "manager") && !strings.Contains(l, "first manager"):
			role = "manager"
		}
		if tok := tokenRE.FindString(line); tok != "" {
			switch role {
			case "worker":
				t.Worker = tok
			case "manager":
				t.Manager = tok
			}
		}
	}
	for _, role := range []string{"worker", "manager"} {
		if (role == "worker" && t.Worker != "") || (role == "manager" && t.Manager != "") {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, _ := exec.CommandContext(cctx, c.e.shoalBin, "--data-dir", c.nodes[0].dataDir, "token", "show", role).Output()
		cancel()
		if tok := tokenRE.FindString(string(out)); tok != "" {
			if role == "worker" {
				t.Worker = tok
			} else {
				t.Manager = tok
			}
		}
	}
	return t
}

// dial connects an admin client to the given managers.
func (c *shoalCluster) dial(ctx context.Context, hosts ...string) (*client.Client, error) {
	return client.Dial(ctx, client.Config{Hosts: hosts, CertDir: c.adminDir})
}

// getCluster is a one-shot GetCluster through a fresh connection to host.
func (c *shoalCluster) getCluster(ctx context.Context, host string) (*shoalv1.GetClusterResponse, error) {
	cl, err := c.dial(ctx, host)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	return cl.Control.GetCluster(ctx, &shoalv1.GetClusterRequest{})
}

// poll calls fn every interval until it succeeds, the timeout passes (the
// last error is returned) or a node of the cluster exits.
func (c *shoalCluster) poll(ctx context.Context, timeout, interval time.Duration, fn func(ctx context.Context) error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if err := c.checkAlive(); err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, min(5*time.Second, max(time.Until(deadline), interval)))
		last = fn(cctx)
		cancel()
		if last == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// voters counts the voters of a GetCluster answer.
func voters(resp *shoalv1.GetClusterResponse) int {
	n := 0
	for _, m := range resp.GetMembers() {
		if strings.EqualFold(m.GetSuffrage(), "voter") {
			n++
		}
	}
	return n
}

// waitVoters waits until the leader reports want voters.
func (c *shoalCluster) waitVoters(ctx context.Context, want int) error {
	err := c.poll(ctx, 60*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
		resp, err := c.getCluster(ctx, c.nodes[0].addr)
		if err != nil {
			return err
		}
		if resp.GetLeaderId() == "" {
			return errors.New("no leader")
		}
		if v := voters(resp); v != want {
			return fmt.Errorf("%d voters, want %d (members %v)", v, want, resp.GetMembers())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %d voters: %w", want, err)
	}
	return nil
}

// leader returns the current leader's node, as the given hosts (default:
// all managers) see it.
func (c *shoalCluster) leader(ctx context.Context) (*shoalNode, *shoalv1.GetClusterResponse, error) {
	var errs []error
	for _, m := range c.managers() {
		if m.proc == nil || m.down {
			continue
		}
		if done, _ := m.proc.exited(); done {
			continue
		}
		resp, err := c.getCluster(ctx, m.addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.addr, err))
			continue
		}
		for _, mem := range resp.GetMembers() {
			if mem.GetNodeId() != resp.GetLeaderId() {
				continue
			}
			for _, n := range c.managers() {
				if sameHost(mem.GetAddr(), n.addr) {
					return n, resp, nil
				}
			}
			return nil, resp, fmt.Errorf("leader %q has address %q, which is none of %v", mem.GetNodeId(), mem.GetAddr(), c.managerAddrs())
		}
		errs = append(errs, fmt.Errorf("%s: no leader among members (leader_id %q, members %v)", m.addr, resp.GetLeaderId(), resp.GetMembers()))
	}
	return nil, nil, fmt.Errorf("no leader: %w", errors.Join(errs...))
}

// sameHost compares the host parts of two host[:port] addresses.
func sameHost(a, b string) bool {
	return hostOf(a) == hostOf(b)
}

func hostOf(a string) string {
	if h, _, err := net.SplitHostPort(a); err == nil {
		return h
	}
	return a
}

// waitHealthy waits until every manager is a voter, there is a leader, and
// every node is READY (managers: and reachable), as the leader sees it.
func (c *shoalCluster) waitHealthy(ctx context.Context) error {
	want := len(c.managers())
	err := c.poll(ctx, 60*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
		_, resp, err := c.leader(ctx)
		if err != nil {
			return err
		}
		if v := voters(resp); v != want {
			return fmt.Errorf("%d voters, want %d", v, want)
		}
		return c.nodesReady(ctx)
	})
	if err != nil {
		return fmt.Errorf("waiting for a healthy cluster: %w", err)
	}
	return nil
}

// nodesReady checks that ListNodes shows every node of the cluster READY
// and every manager reachable.
func (c *shoalCluster) nodesReady(ctx context.Context) error {
	cl, err := c.dial(ctx, c.managerAddrs()...)
	if err != nil {
		return err
	}
	defer cl.Close()
	lr, err := client.ListNodes(ctx, cl.Control, &shoalv1.ListNodesRequest{})
	if err != nil {
		return err
	}
	for _, n := range c.nodes {
		nd := findNode(lr.GetNodes(), n.ip)
		if nd == nil {
			return fmt.Errorf("node %s (%s) not listed", n.name, n.addr)
		}
		if s := nd.GetStatus().GetState(); s != shoalv1.NodeState_NODE_STATE_READY {
			return fmt.Errorf("node %s (%s) is %s", n.name, n.addr, s)
		}
		if !n.worker {
			if r := nd.GetManagerStatus().GetReachability(); r != "" && r != "reachable" {
				return fmt.Errorf("manager %s (%s) is %s", n.name, n.addr, r)
			}
		}
	}
	return nil
}

// findNode finds a node by its address's host part.
func findNode(nodes []*shoalv1.Node, ip string) *shoalv1.Node {
	for _, nd := range nodes {
		if hostOf(nd.GetStatus().GetAddr()) == ip {
			return nd
		}
	}
	return nil
}

// restart runs `shoal daemon --data-dir D` for a killed node.
func (c *shoalCluster) restart(n *shoalNode) error {
	if done, _ := n.proc.exited(); !done {
		return fmt.Errorf("%s is still running", n.name)
	}
	p, err := c.e.sup.startEnv(n.name+" (restarted)", n.logPath, nil, c.e.nodeEnv(n), c.e.shoalBin, c.e.nodeArgs("daemon", "--data-dir", n.dataDir)...)
	if err != nil {
		return err
	}
	n.proc, n.down = p, false
	return nil
}

// killNode kill -9s a node and returns when it is gone.
func (c *shoalCluster) killNode(n *shoalNode) error {
	n.down = true
	return c.e.sup.kill(n.proc)
}
