package opsapi

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/errdefs"
	"github.com/shoal-dev/shoal/manager/logbroker"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

// Bounds checked here before anything is dialled (the agent checks them
// again: agent/agentapi).
const (
	maxExecArgs       = 1024
	maxExecArgvBytes  = 64 << 10
	maxExecStdinChunk = 1 << 20
)

// validateStart checks the start message; the error names the field.
func validateStart(st *shoalv1.ExecStart) error {
	if st == nil {
		return errdefs.InvalidArgumentf("start: the first message must be start")
	}
	if st.GetTaskId() == "" {
		return errdefs.InvalidArgumentf("start.task_id: required")
	}
	if len(st.GetCmd()) == 0 || st.GetCmd()[0] == "" {
		return errdefs.InvalidArgumentf("start.cmd: a command is required")
	}
	if n := len(st.GetCmd()) + len(st.GetEnv()); n > maxExecArgs {
		return errdefs.InvalidArgumentf("start.cmd: %d arguments and env entries, at most %d", n, maxExecArgs)
	}
	size := 0
	for _, a := range st.GetCmd() {
		size += len(a) + 1
	}
	for i, e := range st.GetEnv() {
		size += len(e) + 1
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return errdefs.InvalidArgumentf("start.env[%d]: %q is not KEY=VALUE", i, e)
		}
	}
	if size > maxExecArgvBytes {
		return errdefs.InvalidArgumentf("start.cmd: argv and env are %d bytes, at most %d", size, maxExecArgvBytes)
	}
	if w := st.GetWorkdir(); w != "" && !strings.HasPrefix(w, "/") {
		return errdefs.InvalidArgumentf("start.workdir: %q must be absolute", w)
	}
	return nil
}

// execAudit is what the audit record of one exec says. Never the input or
// output: those may hold anything.
type execAudit struct {
	caller, role  string
	tokenID       string // the API token's id, when the caller used one
	task, service string
	node          string
	argv          []string
	tty, stdin    bool
	user, workdir string
	code          int32
	signal        string
	exited        bool
	err           error
	began         time.Time
}

func (s *Server) record(ctx context.Context, a *execAudit) {
	attrs := []any{"event", "exec", "caller", a.caller, "caller_role", a.role, "task", a.task, "service", a.service,
		"node", a.node, "argv", a.argv, "tty", a.tty, "stdin", a.stdin, "duration", time.Since(a.began).String()}
	if a.tokenID != "" {
		attrs = append(attrs, "caller_token_id", a.tokenID)
	}
	if a.user != "" {
		attrs = append(attrs, "user", a.user)
	}
	if a.workdir != "" {
		attrs = append(attrs, "workdir", a.workdir)
	}
	if a.exited {
		attrs = append(attrs, "exit_code", a.code)
		if a.signal != "" {
			attrs = append(attrs, "signal", a.signal)
		}
	}
	if a.err != nil {
		attrs = append(attrs, "error", status.Convert(errdefs.ToGRPC(a.err)).Message())
	}
	s.audit.InfoContext(ctx, "exec", attrs...)
}

// TaskExec runs a process in a running task's container: it resolves the
// task in this manager's store, checks it runs on a node that is up, and
// relays the stream to that node's agent (AgentAPI.Exec), which the
// node's answer must start within ReachTimeout. The caller's hanging up
// ends the agent stream, which kills the process. Every exec, refused or
// run, is one audit record.
func (s *Server) TaskExec(stream shoalv1.Ops_TaskExecServer) (err error) {
	ctx := stream.Context()
	a := &execAudit{began: time.Now(), code: -1}
	if id, ok := trust.IdentityFrom(ctx); ok {
		a.caller, a.role = id.NodeID, string(id.Role)
		if trust.TokenRoleOf(id) != 0 {
			a.tokenID = id.Serial
		}
	} else if id, err := trust.PeerIdentity(ctx); err == nil {
		a.caller, a.role = id.NodeID, string(id.Role)
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start != nil {
		a.task, a.argv, a.tty, a.stdin, a.user, a.workdir = start.GetTaskId(), start.GetCmd(), start.GetTty(), start.GetStdin(), start.GetUser(), start.GetWorkdir()
	}
	defer func() {
		a.err = err
		s.record(ctx, a)
	}()
	if err := validateStart(start); err != nil {
		return err
	}
	task, node, err := s.execTarget(start.GetTaskId())
	if task != nil {
		a.task, a.service, a.node = task.GetMeta().GetId(), task.GetServiceName(), task.GetNodeId()
	}
	if err != nil {
		return err
	}
	nodeID := node.GetMeta().GetId()
	label := logbroker.NodeLabel(node, nodeID)
	addr := node.GetStatus().GetAgentAddr()
	log := s.log.With("task_id", a.task, "node_id", nodeID)

	conn, err := s.dial(ctx, addr, nodeID)
	if err != nil {
		return errdefs.Unavailablef("%s cannot be dialled at %s: %v", label, addr, err)
	}
	defer conn.Close()
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The reach deadline covers dial, TLS and the agent's headers, which
	// it sends before anything else.
	var timedOut atomic.Bool
	timer := time.AfterFunc(s.cfg.ReachTimeout, func() {
		timedOut.Store(true)
		cancel()
	})
	as, err := shoalv1.NewAgentAPIClient(conn).Exec(actx)
	if err == nil {
		_, err = as.Header()
	}
	timer.Stop()
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case timedOut.Load():
		log.Warn("agent did not answer for exec", "timeout", s.cfg.ReachTimeout)
		return errdefs.Unavailablef("%s, which holds task %q, did not answer within %s", label, a.task, s.cfg.ReachTimeout)
	case err != nil:
		return errdefs.Unavailablef("%s, agent API at %s: %s", label, addr, status.Convert(err).Message())
	}
	fwd := &shoalv1.ExecStart{TaskId: a.task, Cmd: start.GetCmd(), Tty: start.GetTty(), Stdin: start.GetStdin(),
		Env: start.GetEnv(), User: start.GetUser(), Workdir: start.GetWorkdir(), Size: start.GetSize()}
	if err := as.Send(&shoalv1.ExecRequest{Msg: &shoalv1.ExecRequest_Start{Start: fwd}}); err != nil {
		return agentErr(label, err, as)
	}

	// Input: the caller's messages to the agent, in a goroutine of its
	// own; a bad one ends the exec.
	inErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				_ = as.CloseSend()
				return
			}
			if err != nil {
				cancel()
				return
			}
			switch m := req.GetMsg().(type) {
			case *shoalv1.ExecRequest_Start:
				inErr <- errdefs.InvalidArgumentf("start: sent twice")
				cancel()
				return
			case *shoalv1.ExecRequest_Stdin:
				if len(m.Stdin) > maxExecStdinChunk {
					inErr <- errdefs.InvalidArgumentf("stdin: a message of %d bytes, at most %d", len(m.Stdin), maxExecStdinChunk)
					cancel()
					return
				}
			}
			if err := as.Send(req); err != nil {
				return // the agent's side ended: the output loop reports it
			}
		}
	}()

	for {
		resp, err := as.Recv()
		if errors.Is(err, io.EOF) {
			if !a.exited {
				return errdefs.Unavailablef("%s ended the exec without an exit status", label)
			}
			return nil
		}
		if err != nil {
			select {
			case e := <-inErr:
				return e
			default:
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return agentErr(label, err, nil)
		}
		if ex := resp.GetExit(); ex != nil {
			a.exited, a.code, a.signal = true, ex.GetCode(), ex.GetSignal()
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// agentErr keeps the class of an error the agent answered with (not
// found, not running, refused) and names the node when the stream broke.
func agentErr(label string, err error, as interface {
	Recv() (*shoalv1.ExecResponse, error)
}) error {
	if as != nil {
		// A failed Send hides the agent's reason; Recv tells it.
		if _, rerr := as.Recv(); rerr != nil && !errors.Is(rerr, io.EOF) {
			err = rerr
		}
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.OK:
		return nil
	case codes.Canceled, codes.DeadlineExceeded, codes.Unavailable: // the connection
		return errdefs.Unavailablef("%s: the exec stream broke: %s", label, st.Message())
	}
	return err
}

// execTarget finds the task and its node, or says why it cannot be
// reached: the task is returned whenever it was found (for the audit).
func (s *Server) execTarget(ref string) (*shoalv1.Task, *shoalv1.Node, error) {
	r := s.cfg.Store.View()
	task, err := raftstore.ResolveTask(r, ref)
	if err != nil {
		return nil, nil, err
	}
	id := task.GetMeta().GetId()
	if st := task.GetStatus().GetState(); st != shoalv1.TaskState_TASK_STATE_RUNNING {
		return task, nil, errdefs.FailedPreconditionf("task %q is %s, not running", id, execStateName(st))
	}
	nodeID := task.GetNodeId()
	node, ok := raftstore.Get[*shoalv1.Node](r, nodeID)
	switch {
	case !ok:
		return task, nil, errdefs.Unavailablef("node %q of task %q is no longer in the cluster", nodeID, id)
	case node.GetStatus().GetState() == shoalv1.NodeState_NODE_STATE_DOWN:
		return task, nil, errdefs.Unavailablef("%s, which holds task %q, is down", logbroker.NodeLabel(node, nodeID), id)
	case node.GetStatus().GetAgentAddr() == "":
		return task, nil, errdefs.Unavailablef("%s has not reported an agent API address", logbroker.NodeLabel(node, nodeID))
	}
	return task, node, nil
}

// execStateName is "complete" for TASK_STATE_COMPLETE.
func execStateName(s shoalv1.TaskState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "TASK_STATE_"))
}
