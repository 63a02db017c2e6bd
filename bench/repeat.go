package main

import (
	"context"
	"debug/buildinfo"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

// -runs N repeats the throughput benchmark N times and prints the table
// of the runs (summarize.go), so that the README's figure is one command:
// one run on this machine moves by ±20 % from minute to minute, and only
// the same run's etcd is a fair reference. With -base-bin another build
// runs as often, interleaved, the order alternating per run (this build
// first in odd runs, the base first in even ones), so that drift of the
// machine falls on both alike. Each run starts its clusters afresh in a
// directory of its own; its report goes to -json-dir, shoal-NN.json or
// base-NN.json, so the table can be made again with -summarize.

// checkRepeat refuses -runs, -base-bin and -json-dir combinations that
// would not give the table.
func checkRepeat(o *options, fs *flag.FlagSet) error {
	if o.runs < 1 {
		return errors.New("-runs must be >= 1")
	}
	if o.runs == 1 && o.baseBin == "" {
		if o.jsonDir != "" {
			return errors.New("-json-dir goes with -runs N > 1 or -base-bin (one run: -json FILE)")
		}
		return nil
	}
	if o.jsonDir == "" {
		return errors.New("-runs and -base-bin need -json-dir DIR for the runs' reports")
	}
	if o.jsonPath != "" {
		return errors.New("-runs and -base-bin write one report per run to -json-dir; -json is for a single run")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, name := range []string{"failover", "nodedown", "containers", "bigservice", "soak", "summarize"} {
		if set[name] {
			return fmt.Errorf("-runs and -base-bin repeat the throughput benchmark only; drop -%s", name)
		}
	}
	if o.only != "all" {
		return fmt.Errorf("-runs and -base-bin compare with the etcd of each run: want -only all, got %q", o.only)
	}
	if o.baseBin != "" {
		if _, err := os.Stat(o.baseBin); err != nil {
			return fmt.Errorf("-base-bin: %w", err)
		}
	}
	return os.MkdirAll(o.jsonDir, 0o755)
}

// repeat runs the benchmark o.runs times (and the base as often), writing
// each report, then prints the table of them.
func repeat(ctx context.Context, e *env) error {
	o := *e.o
	root := e.dir
	// Build (or find) shoal once; every run uses the same binary.
	bin, err := shoalBinary(ctx, e)
	if err != nil {
		return err
	}
	o.shoalBin = bin
	which := []struct{ name, bin string }{{"shoal", bin}}
	if o.baseBin != "" {
		which = append(which, struct{ name, bin string }{"base", o.baseBin})
	}
	var shoalGlob, baseGlob string
	shoalGlob = filepath.Join(o.jsonDir, "shoal-*.json")
	if o.baseBin != "" {
		baseGlob = filepath.Join(o.jsonDir, "base-*.json")
	}
	for _, g := range []string{shoalGlob, baseGlob} {
		if old, _ := filepath.Glob(g); g != "" && len(old) > 0 {
			return fmt.Errorf("-json-dir %s already holds %s: give an empty directory", o.jsonDir, filepath.Base(old[0]))
		}
	}
	for i := 1; i <= o.runs; i++ {
		order := which
		if i%2 == 0 && len(which) == 2 {
			order = []struct{ name, bin string }{which[1], which[0]}
		}
		for _, w := range order {
			ro := o
			ro.shoalBin, ro.jsonPath = w.bin, filepath.Join(o.jsonDir, fmt.Sprintf("%s-%02d.json", w.name, i))
			dir, err := os.MkdirTemp(root, fmt.Sprintf("%s-%02d-", w.name, i))
			if err != nil {
				return err
			}
			// Each cluster is stopped by its own cell's code; the logs
			// shown after a failure are this run's.
			e.o, e.dir = &ro, dir
			e.mu.Lock()
			e.logs = nil
			e.mu.Unlock()
			e.logf("run %d of %d: %s (%s)", i, o.runs, w.name, w.bin)
			rep, err := benchmark(ctx, e)
			if rep != nil {
				if werr := rep.write(os.Stdout, ro.jsonPath); werr != nil && err == nil {
					err = werr
				}
			}
			if err != nil {
				// The logs stay for the tails printed on the way out.
				return fmt.Errorf("run %d (%s): %w", i, w.name, err)
			}
			if !o.keep {
				os.RemoveAll(dir)
			}
		}
	}
	e.o, e.dir = &o, root
	return runSummarize(os.Stdout, shoalGlob, baseGlob)
}

// binaryVersion is the VCS revision a Go binary was built from (short,
// "+dirty" if modified), or "" if it carries none.
func binaryVersion(path string) string {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return ""
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if len(rev) > 7 {
		rev = rev[:7]
	}
	if rev == "" {
		return ""
	}
	return rev + dirty
}
