package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func (a *app) serviceStats() *cobra.Command {
	var noStream bool
	cmd := &cobra.Command{Use: "stats [--no-stream] SERVICE", Short: "Show live resource use of a service's running tasks (like docker stats)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.streamStats(cmd, &shoalv1.StatsRequest{Service: args[0], Stream: !noStream})
		}}
	cmd.Flags().BoolVar(&noStream, "no-stream", false, "print one sample and exit")
	return cmd
}

func (a *app) taskStats() *cobra.Command {
	var noStream bool
	cmd := &cobra.Command{Use: "stats [--no-stream] TASK...", Short: "Show live resource use of tasks (like docker stats)", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.streamStats(cmd, &shoalv1.StatsRequest{TaskIds: args, Stream: !noStream})
		}}
	cmd.Flags().BoolVar(&noStream, "no-stream", false, "print one sample and exit")
	return cmd
}

// addStats registers `service stats` and `task stats`.
func (a *app) addStats(root *cobra.Command) {
	for _, c := range root.Commands() {
		switch c.Name() {
		case "service":
			c.AddCommand(a.serviceStats())
		case "task":
			c.AddCommand(a.taskStats())
		}
	}
}

// clearScreen moves the cursor home and clears the screen, as docker
// stats does between samples on a terminal.
const clearScreen = "\x1b[2J\x1b[H"

// streamStats asks a manager (Ops.TaskStats) and prints a table per
// sample: redrawn in place on a terminal, one after the other otherwise.
// Warnings (a node down or silent, a task not running) go to stderr.
func (a *app) streamStats(cmd *cobra.Command, req *shoalv1.StatsRequest) error {
	cl, err := a.dial(cmd.Context())
	if err != nil {
		return err
	}
	defer cl.Close()
	nodes := a.nodeNames(cmd.Context(), cl.Control)
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	// --timeout bounds the wait for the first sample (nodes that do not
	// answer are given up on by the manager well before).
	var timedOut atomic.Bool
	timer := time.AfterFunc(a.timeout, func() { timedOut.Store(true); cancel() })
	st, err := shoalv1.NewOpsClient(cl.Conn()).TaskStats(ctx, req)
	tty := isTerminal(a.out)
	for first := true; ; first = false {
		var resp *shoalv1.StatsResponse
		if err == nil {
			resp, err = st.Recv()
		}
		if first {
			timer.Stop()
			if timedOut.Load() {
				return fmt.Errorf("timed out: no stats from a manager within %s (--timeout)", a.timeout)
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if cmd.Context().Err() != nil {
				return nil // interrupted: the normal end of a stream
			}
			return err
		}
		var b bytes.Buffer
		if tty && req.GetStream() {
			b.WriteString(clearScreen)
		} else if !first {
			b.WriteByte('\n')
		}
		renderStats(&b, resp, nodes)
		a.out.Write(b.Bytes())
		for _, w := range resp.GetWarnings() {
			fmt.Fprintf(a.errOut, "warning: %s\n", w)
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// renderStats writes one sample as docker stats' table.
func renderStats(w io.Writer, resp *shoalv1.StatsResponse, nodes map[string]string) {
	tw := table(w)
	fmt.Fprintln(tw, "TASK\tNODE\tCPU %\tMEM USAGE / LIMIT\tMEM %\tNET I/O\tPIDS")
	for _, s := range resp.GetStats() {
		node := nodes[s.GetNodeId()]
		if node == "" {
			node = shortID(s.GetNodeId())
		}
		svc := s.GetServiceName()
		if svc == "" {
			svc = shortID(s.GetServiceId())
		}
		slot := strconv.FormatUint(s.GetSlot(), 10)
		if s.GetSlot() == 0 {
			slot = shortID(s.GetNodeId())
		}
		limit, memPct := "-", "-"
		if l := s.GetMemoryLimitBytes(); l > 0 {
			limit = humanBytes(l, true)
			memPct = fmt.Sprintf("%.2f%%", float64(s.GetMemoryBytes())/float64(l)*100)
		}
		fmt.Fprintf(tw, "%s.%s.%s\t%s\t%.2f%%\t%s / %s\t%s\t%s / %s\t%d\n", svc, slot, shortID(s.GetTaskId()), node,
			s.GetCpuPercent(), humanBytes(s.GetMemoryBytes(), true), limit, memPct,
			humanBytes(s.GetNetRxBytes(), false), humanBytes(s.GetNetTxBytes(), false), s.GetPids())
	}
	tw.Flush()
}

// humanBytes prints sizes as docker stats does: memory in binary units
// (MiB), network in decimal ones (kB).
func humanBytes(n uint64, binary bool) string {
	base, units := 1000.0, []string{"B", "kB", "MB", "GB", "TB", "PB"}
	if binary {
		base, units = 1024.0, []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	}
	v, i := float64(n), 0
	for v >= base && i < len(units)-1 {
		v /= base
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%dB", n)
	}
	return fmt.Sprintf("%.4g%s", v, units[i])
}
