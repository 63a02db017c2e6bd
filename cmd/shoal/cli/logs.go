package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// logsFlags are the flags of `service logs` and `task logs`.
type logsFlags struct {
	follow     bool
	tail       string
	since      string
	timestamps bool
	noTaskIDs  bool
}

func (l *logsFlags) bind(c *cobra.Command) {
	f := c.Flags()
	f.BoolVarP(&l.follow, "follow", "f", false, "keep printing new lines until interrupted")
	f.StringVarP(&l.tail, "tail", "n", "all", `number of lines to show from the end of each task's log, or "all"`)
	f.StringVar(&l.since, "since", "", "show lines since a time: RFC 3339 (2025-03-01T12:00:00Z) or a duration before now (10m, 1h30m)")
	f.BoolVarP(&l.timestamps, "timestamps", "t", false, "show each line's time")
	f.BoolVar(&l.noTaskIDs, "no-task-ids", false, "print lines without the task and node prefix")
}

// options turns the flags into the request's options.
func (l *logsFlags) options(now time.Time) (*shoalv1.LogsOptions, error) {
	o := &shoalv1.LogsOptions{Follow: l.follow}
	if t := strings.TrimSpace(l.tail); t != "" && t != "all" {
		n, err := strconv.ParseInt(t, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf(`--tail: want a number of lines or "all", got %q`, l.tail)
		}
		o.Tail = &n
	}
	if l.since != "" {
		ts, err := parseSince(l.since, now)
		if err != nil {
			return nil, err
		}
		o.Since = timestamppb.New(ts)
	}
	return o, nil
}

// parseSince reads --since: a duration before now, or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since: %q is in the future; give a positive duration", s)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--since: %q is neither a duration (10m) nor an RFC 3339 time (2025-03-01T12:00:00Z)", s)
}

func (a *app) serviceLogs() *cobra.Command {
	var lf logsFlags
	cmd := &cobra.Command{Use: "logs [flags] SERVICE", Short: "Show the logs of a service's tasks", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.streamLogs(cmd, &shoalv1.LogsRequest{Service: args[0]}, lf)
		}}
	lf.bind(cmd)
	return cmd
}

func (a *app) taskLogs() *cobra.Command {
	var lf logsFlags
	cmd := &cobra.Command{Use: "logs [flags] TASK...", Short: "Show the logs of tasks", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.streamLogs(cmd, &shoalv1.LogsRequest{TaskIds: args}, lf)
		}}
	lf.bind(cmd)
	return cmd
}

// streamLogs asks a manager for logs and prints them as they come.
// Warnings (a node down or silent) go to stderr and do not make the
// command fail: the lines that could be had were printed.
func (a *app) streamLogs(cmd *cobra.Command, req *shoalv1.LogsRequest, lf logsFlags) error {
	opts, err := lf.options(time.Now())
	if err != nil {
		return err
	}
	req.Options = opts
	cl, err := a.dial(cmd.Context())
	if err != nil {
		return err
	}
	defer cl.Close()
	p := &logPrinter{out: a.out, errOut: a.errOut, timestamps: lf.timestamps, noTaskIDs: lf.noTaskIDs}
	if !lf.noTaskIDs {
		p.nodes = a.nodeNames(cmd.Context(), cl.Control)
	}
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	// --timeout bounds the wait for the manager's first answer (it sends
	// headers at once); the stream itself may last as long as it likes.
	var timedOut atomic.Bool
	timer := time.AfterFunc(a.timeout, func() { timedOut.Store(true); cancel() })
	st, err := shoalv1.NewLogsClient(cl.Conn()).ServiceLogs(ctx, req)
	if err == nil {
		_, err = st.Header()
	}
	timer.Stop()
	if timedOut.Load() {
		return fmt.Errorf("timed out: no answer from a manager within %s (--timeout)", a.timeout)
	}
	if err != nil {
		return err
	}
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if cmd.Context().Err() != nil {
				return nil // interrupted: the normal end of a follow
			}
			return err
		}
		p.print(resp)
	}
}

// nodeNames maps node ids to names for the line prefixes; without it the
// prefixes show short ids, which is no reason to fail.
func (a *app) nodeNames(ctx context.Context, ctl shoalv1.ControlClient) map[string]string {
	ctx, cancel := a.call(ctx)
	defer cancel()
	names := map[string]string{}
	resp, err := client.ListNodes(ctx, ctl, &shoalv1.ListNodesRequest{})
	if err != nil {
		return names
	}
	for _, n := range resp.GetNodes() {
		if name := nodeName(n); name != "" {
			names[n.GetMeta().GetId()] = name
		}
	}
	return names
}

// logPrinter prints log lines docker-style:
//
//	web.1.abcd1234efgh@node1    | the line
//
// padding the prefixes to the widest seen so far, so the bars line up.
// Lines the task wrote to stderr go to stderr.
type logPrinter struct {
	out, errOut           io.Writer
	nodes                 map[string]string
	timestamps, noTaskIDs bool
	width                 int
}

func (p *logPrinter) print(resp *shoalv1.LogsResponse) {
	for _, w := range resp.GetWarnings() {
		fmt.Fprintf(p.errOut, "warning: %s\n", w)
	}
	for _, m := range resp.GetMessages() {
		var b strings.Builder
		if p.timestamps {
			b.WriteString(m.GetTime().AsTime().UTC().Format(time.RFC3339Nano))
			b.WriteByte(' ')
		}
		if !p.noTaskIDs {
			prefix := p.prefix(m)
			p.width = max(p.width, len(prefix))
			b.WriteString(prefix)
			b.WriteString(strings.Repeat(" ", p.width-len(prefix)))
			b.WriteString(" | ")
		}
		b.Write(m.GetData())
		b.WriteByte('\n')
		w := p.out
		if m.GetStream() == "stderr" {
			w = p.errOut
		}
		io.WriteString(w, b.String())
	}
}

// prefix is SERVICE.SLOT.TASK@NODE (SERVICE.NODE.TASK@NODE for global
// services, whose tasks have no slot).
func (p *logPrinter) prefix(m *shoalv1.LogMessage) string {
	node := p.nodes[m.GetNodeId()]
	if node == "" {
		node = shortID(m.GetNodeId())
	}
	svc := m.GetServiceName()
	if svc == "" {
		svc = shortID(m.GetServiceId())
	}
	slot := strconv.FormatUint(m.GetSlot(), 10)
	if m.GetSlot() == 0 {
		slot = shortID(m.GetNodeId())
	}
	return fmt.Sprintf("%s.%s.%s@%s", svc, slot, shortID(m.GetTaskId()), node)
}

// addLogsAndImages registers `service logs`, `task logs` and `image`.
func (a *app) addLogsAndImages(root *cobra.Command) {
	for _, c := range root.Commands() {
		switch c.Name() {
		case "service":
			c.AddCommand(a.serviceLogs())
		case "task":
			c.AddCommand(a.taskLogs())
		}
	}
	root.AddCommand(a.imageCmd())
}
