package logbroker

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	"github.com/shoal-dev/shoal/logstream"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

// Store is what the broker reads: the manager's local view, and its watch
// for tasks that start while a caller follows.
type Store interface {
	View() raftstore.Reader
	Watch(ctx context.Context, fromIndex uint64, kinds ...raftstore.Kind) (raftstore.Subscription, error)
}

// Config configures a Broker.
type Config struct {
	Store Store
	// Certs are the manager's node credentials; agents are dialled with
	// them.
	Certs  *trust.CertStore
	Logger *slog.Logger
	// ReachTimeout bounds how long a node may take to answer (dial, TLS,
	// response headers) before it is reported and skipped; zero means
	// DefaultReachTimeout.
	ReachTimeout time.Duration
}

// DefaultReachTimeout is how long a node gets to answer. Agents answer in
// milliseconds; a node that takes seconds is as good as down for someone
// waiting at a terminal.
const DefaultReachTimeout = 3 * time.Second

// Broker implements shoalv1.LogsServer.
type Broker struct {
	shoalv1.UnimplementedLogsServer
	cfg  Config
	log  *slog.Logger
	dial func(addr, nodeID string) (*grpc.ClientConn, error)
}

// New returns a broker; register it with shoalv1.RegisterLogsServer.
func New(cfg Config) *Broker {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReachTimeout <= 0 {
		cfg.ReachTimeout = DefaultReachTimeout
	}
	b := &Broker{cfg: cfg, log: cfg.Logger.With("component", "logbroker")}
	b.dial = func(addr, nodeID string) (*grpc.ClientConn, error) {
		// The client configuration is taken per dial: it presents the
		// manager's current certificate (promotion, renewal).
		return logstream.Dial(addr, nodeID, cfg.Certs.ClientTLSConfig("", trust.ALPNGRPC),
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}))
	}
	return b
}

func checkOptions(o *shoalv1.LogsOptions) error {
	if o != nil && o.Tail != nil && o.GetTail() < 0 {
		return errdefs.InvalidArgumentf("options.tail: must not be negative (got %d)", o.GetTail())
	}
	if o.GetSince() != nil {
		if err := o.GetSince().CheckValid(); err != nil {
			return errdefs.InvalidArgumentf("options.since: %v", err)
		}
	}
	return nil
}

// request is a LogsRequest resolved against one view of the store.
type request struct {
	service *shoalv1.Service // nil when asked by task ids
	tasks   []*shoalv1.Task  // on nodes, sorted by id
	// quiet are tasks whose logs may well be gone (finished tasks of a
	// service): their absence on the node is not reported.
	quiet    map[string]bool
	warnings []string
}

// onNode says whether a task has reached a node (and so may have logs).
func onNode(t *shoalv1.Task) bool {
	return t.GetNodeId() != "" && t.GetStatus().GetState() >= shoalv1.TaskState_TASK_STATE_ASSIGNED
}

func finished(t *shoalv1.Task) bool {
	return t.GetStatus().GetState() >= shoalv1.TaskState_TASK_STATE_COMPLETE
}

func resolve(r raftstore.Reader, req *shoalv1.LogsRequest) (*request, error) {
	switch {
	case req.GetService() != "" && len(req.GetTaskIds()) > 0:
		return nil, errdefs.InvalidArgumentf("give a service or task ids, not both")
	case req.GetService() == "" && len(req.GetTaskIds()) == 0:
		return nil, errdefs.InvalidArgumentf("a service or at least one task id is required")
	}
	out := &request{quiet: map[string]bool{}}
	if req.GetService() != "" {
		svc, err := raftstore.ResolveRef[*shoalv1.Service](r, req.GetService())
		if err != nil {
			return nil, err
		}
		out.service = svc
		for _, t := range raftstore.Find[*shoalv1.Task](r, raftstore.IndexServiceID, svc.GetMeta().GetId()) {
			if onNode(t) {
				out.tasks = append(out.tasks, t)
				if finished(t) {
					out.quiet[t.GetMeta().GetId()] = true
				}
			}
		}
		return out, nil
	}
	seen := map[string]bool{}
	for _, ref := range req.GetTaskIds() {
		t, err := raftstore.ResolveTask(r, ref)
		if err != nil {
			return nil, err
		}
		id := t.GetMeta().GetId()
		if seen[id] {
			continue
		}
		seen[id] = true
		if !onNode(t) {
			out.warnings = append(out.warnings, fmt.Sprintf("task %q has not been scheduled to a node yet: it has no logs", id))
			continue
		}
		out.tasks = append(out.tasks, t)
	}
	sort.Slice(out.tasks, func(i, j int) bool { return out.tasks[i].GetMeta().GetId() < out.tasks[j].GetMeta().GetId() })
	return out, nil
}

// byNode groups tasks by node id, nodes sorted.
func byNode(tasks []*shoalv1.Task) ([]string, map[string][]*shoalv1.Task) {
	m := map[string][]*shoalv1.Task{}
	var ids []string
	for _, t := range tasks {
		if _, ok := m[t.GetNodeId()]; !ok {
			ids = append(ids, t.GetNodeId())
		}
		m[t.GetNodeId()] = append(m[t.GetNodeId()], t)
	}
	sort.Strings(ids)
	return ids, m
}

// CountTasks says "1 task" or "N tasks" (warnings about nodes).
func CountTasks(n int) string {
	if n == 1 {
		return "1 task"
	}
	return fmt.Sprintf("%d tasks", n)
}

// NodeLabel names a node in warnings and errors: `node "name" (id)`.
func NodeLabel(n *shoalv1.Node, id string) string {
	name := n.GetSpec().GetName()
	if name == "" {
		name = n.GetDescription().GetHostname()
	}
	if name == "" || name == id {
		return fmt.Sprintf("node %q", id)
	}
	return fmt.Sprintf("node %q (%s)", name, id)
}

// AgentTarget finds the node whose agent API to dial, or says at once why
// there is none (unknown, down, no agent address), ending with lost (what
// the caller goes without, e.g. "logs of 2 tasks unavailable"). Logs,
// stats and exec (manager/opsapi) reach agents through it.
func AgentTarget(r raftstore.Reader, nodeID, lost string) (*shoalv1.Node, string) {
	node, ok := raftstore.Get[*shoalv1.Node](r, nodeID)
	switch {
	case !ok:
		return nil, fmt.Sprintf("node %q is no longer in the cluster: %s", nodeID, lost)
	case node.GetStatus().GetState() == shoalv1.NodeState_NODE_STATE_DOWN:
		return nil, fmt.Sprintf("%s is down: %s", NodeLabel(node, nodeID), lost)
	case node.GetStatus().GetAgentAddr() == "":
		return nil, fmt.Sprintf("%s has not reported an agent API address: %s", NodeLabel(node, nodeID), lost)
	}
	return node, ""
}

// target is AgentTarget for the logs of n tasks.
func target(r raftstore.Reader, nodeID string, n int) (*shoalv1.Node, string) {
	return AgentTarget(r, nodeID, "logs of "+CountTasks(n)+" unavailable")
}

// ServiceLogs streams the logs of a service's tasks or of given tasks.
func (b *Broker) ServiceLogs(req *shoalv1.LogsRequest, stream shoalv1.Logs_ServiceLogsServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	if err := checkOptions(req.GetOptions()); err != nil {
		return err
	}
	view := b.cfg.Store.View()
	rq, err := resolve(view, req)
	if err != nil {
		return err
	}
	opts := req.GetOptions()
	if opts == nil {
		opts = &shoalv1.LogsOptions{}
	}
	// Headers at once: a caller can bound its wait for them, and a follow
	// of quiet tasks may send nothing else for a long time.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	w := logstream.NewWarnings()
	for _, msg := range rq.warnings {
		w.Add(msg)
	}
	nodeIDs, groups := byNode(rq.tasks)
	b.log.Debug("logs requested", "service", req.GetService(), "tasks", len(rq.tasks), "nodes", len(nodeIDs), "follow", opts.GetFollow())

	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: nothing outlives the call
	if !opts.GetFollow() {
		var ins []<-chan *shoalv1.LogMessage
		for _, id := range nodeIDs {
			node, why := target(view, id, len(groups[id]))
			if node == nil {
				w.Add(why)
				continue
			}
			ch := make(chan *shoalv1.LogMessage, 64)
			ins = append(ins, ch)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(ch)
				b.streamNode(ctx, node, groups[id], opts, rq.quiet, ch, w)
			}()
		}
		err := logstream.SendBatches(ctx, logstream.MergeByTime(ctx, ins), w, stream.Send)
		cancel()
		return err
	}

	// Following: every node writes into one channel; the service watcher
	// adds streams for tasks that start later.
	out := make(chan *shoalv1.LogMessage, 256)
	var producers sync.WaitGroup
	start := func(nodeID string, tasks []*shoalv1.Task, quiet map[string]bool) {
		producers.Add(1)
		go func() {
			defer producers.Done()
			b.followNode(ctx, nodeID, tasks, opts, quiet, out, w)
		}()
	}
	for _, id := range nodeIDs {
		start(id, groups[id], rq.quiet)
	}
	if rq.service != nil {
		streamed := map[string]bool{}
		for _, t := range rq.tasks {
			streamed[t.GetMeta().GetId()] = true
		}
		producers.Add(1)
		go func() {
			defer producers.Done()
			b.watchService(ctx, view.Index(), rq.service.GetMeta().GetId(), streamed, start, w)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		producers.Wait()
		close(out)
	}()
	err = logstream.SendBatches(ctx, out, w, stream.Send)
	cancel()
	return err
}
