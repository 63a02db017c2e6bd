package cli

import (
	"fmt"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/agent/runtime/runtimebench"
)

// debugCmd groups developer tools; hidden from help.
func (a *app) debugCmd() *cobra.Command {
	c := &cobra.Command{Use: "debug", Short: "Developer tools", Hidden: true}
	c.AddCommand(a.runtimeBenchCmd())
	return c
}

// runtimeBenchCmd measures container lifecycles through shoal's runtime
// against the runc CLI. It is a shoal subcommand, not a test, because the
// runtime's shim is /proc/self/exe: only run from the shoal binary does
// the figure include the real shim and container init start-up costs.
func (a *app) runtimeBenchCmd() *cobra.Command {
	var (
		o        runtimebench.BenchOptions
		progress bool
	)
	c := &cobra.Command{
		Use:   "runtime-bench",
		Short: "Median/p90 of create→start→exit→cleanup of /bin/true: shoal's runtime vs the runc CLI (root only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Rootfs != "" {
				abs, err := filepath.Abs(o.Rootfs)
				if err != nil {
					return err
				}
				o.Rootfs = abs
			}
			if progress {
				o.Progress = a.errOut
			}
			res, err := runtimebench.Bench(cmd.Context(), o)
			if err != nil {
				return err
			}
			a.printRuntimeBench(o, res)
			return nil
		},
	}
	f := c.Flags()
	f.IntVar(&o.N, "n", 50, "iterations of each (after one warm-up each), interleaved")
	f.StringVar(&o.Rootfs, "rootfs", "", "rootfs holding /bin/true (default: a temporary one with Debian's static busybox)")
	f.StringVar(&o.Busybox, "busybox", "/bin/busybox", "static busybox for the default rootfs")
	f.StringVar(&o.Runc, "runc", "runc", "runc binary to compare with")
	f.BoolVar(&progress, "progress", false, "print each iteration to stderr")
	f.BoolVar(&o.NoSpare, "no-spare", false, "measure without the spare shim (each Start pays for a shim's start-up)")
	return c
}

func (a *app) printRuntimeBench(o runtimebench.BenchOptions, r *runtimebench.BenchResult) {
	rootfs := r.Rootfs
	if rootfs == "" {
		rootfs = "temporary, busybox from " + o.Busybox
	}
	fmt.Fprintf(a.out, "lifecycle of /bin/true (create → start → exit → clean-up), n=%d each, interleaved\n", len(r.Ours))
	fmt.Fprintf(a.out, "rootfs: %s; runc: %s\n\n", rootfs, r.RuncPath)
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUNTIME\tMEDIAN\tP90\tMIN")
	row := func(name string, ds []time.Duration) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, fmtMS(runtimebench.Percentile(ds, 50)), fmtMS(runtimebench.Percentile(ds, 90)), fmtMS(runtimebench.Percentile(ds, 0)))
	}
	row("shoal (Start, Wait, Remove)", r.Ours)
	row("  Start", r.OursStart)
	row("  Wait (run, exit, clean-up)", r.OursWait)
	row("  Remove", r.OursRemove)
	row("runc CLI (runc run)", r.Runc)
	tw.Flush()
	fmt.Fprintf(a.out, "\nratio shoal/runc: median %.2f, p90 %.2f, median of paired runs %.2f\n",
		float64(runtimebench.Percentile(r.Ours, 50))/float64(runtimebench.Percentile(r.Runc, 50)),
		float64(runtimebench.Percentile(r.Ours, 90))/float64(runtimebench.Percentile(r.Runc, 90)),
		r.PairedRatio())
}

func fmtMS(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}
