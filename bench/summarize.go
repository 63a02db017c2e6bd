package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// -summarize turns the -json files of several runs of the throughput
// benchmark into the one table the README gives: per concurrency, the
// range of shoal's writes/s, the range and median of the per-run
// shoal/etcd ratios, p99s, CPU per write, and in how many runs shoal's p99
// was above etcd's. Runs of another build (-summarize-base), interleaved
// with them on the same machine, add a "before, same runs" column. A run
// compares shoal with the etcd of the same run only; the summary never
// pairs figures across runs.

// runSummary is one concurrency's figures over the runs.
type runSummary struct {
	Concurrency int
	Runs        int
	ShoalOps    []float64
	Ratios      []float64
	ShoalP99    []float64
	EtcdP99     []float64
	ShoalCPU    []float64 // cluster
	ShoalClient []float64
	EtcdCPU     []float64
	EtcdClient  []float64
	P99Worse    int       // runs where shoal's p99 was above etcd's
	BaseRatios  []float64 // -summarize-base: the other build's ratios
}

// readRuns reads -json reports named by comma-separated globs, in name
// order; a glob that names nothing, a file that is not a report, or a
// report without shoal-vs-etcd rows is an error naming the file.
func readRuns(globs string) ([]jsonReport, []string, error) {
	var names []string
	for _, g := range strings.Split(globs, ",") {
		g = strings.TrimSpace(g)
		if g == "" {
			continue
		}
		m, err := filepath.Glob(g)
		if err != nil {
			return nil, nil, fmt.Errorf("%q: %w", g, err)
		}
		if len(m) == 0 {
			return nil, nil, fmt.Errorf("%q names no file", g)
		}
		sort.Strings(m)
		names = append(names, m...)
	}
	if len(names) == 0 {
		return nil, nil, errors.New("no file given")
	}
	var reps []jsonReport
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return nil, nil, err
		}
		var r jsonReport
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, nil, fmt.Errorf("%s: not a bench -json report: %w", n, err)
		}
		if len(r.Ratios) == 0 {
			return nil, nil, fmt.Errorf("%s: no shoal-vs-etcd rows (run with -only all)", n)
		}
		reps = append(reps, r)
	}
	return reps, names, nil
}

// summarize folds runs (and base runs, possibly none) per concurrency,
// in increasing concurrency.
func summarize(runs, base []jsonReport) []runSummary {
	by := map[int]*runSummary{}
	get := func(c int) *runSummary {
		if by[c] == nil {
			by[c] = &runSummary{Concurrency: c}
		}
		return by[c]
	}
	for _, r := range runs {
		for _, x := range r.Ratios {
			s := get(x.Concurrency)
			s.Runs++
			s.ShoalOps = append(s.ShoalOps, x.ShoalOps)
			s.Ratios = append(s.Ratios, x.Ratio)
			s.ShoalP99 = append(s.ShoalP99, x.ShoalP99ms)
			s.EtcdP99 = append(s.EtcdP99, x.EtcdP99ms)
			s.ShoalCPU = append(s.ShoalCPU, x.ShoalCPUus)
			s.ShoalClient = append(s.ShoalClient, x.ShoalClientCPUus)
			s.EtcdCPU = append(s.EtcdCPU, x.EtcdCPUus)
			s.EtcdClient = append(s.EtcdClient, x.EtcdClientCPUus)
			if x.ShoalP99ms > x.EtcdP99ms {
				s.P99Worse++
			}
		}
	}
	for _, r := range base {
		for _, x := range r.Ratios {
			if s := by[x.Concurrency]; s != nil {
				s.BaseRatios = append(s.BaseRatios, x.Ratio)
			}
		}
	}
	var out []runSummary
	for _, s := range by {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Concurrency < out[j].Concurrency })
	return out
}

// median of xs (the mean of the middle two for an even count); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// span prints the range of xs with format f ("a–b", or "a" if equal).
func span(f string, xs []float64) string {
	if len(xs) == 0 {
		return "–"
	}
	lo, hi := slices.Min(xs), slices.Max(xs)
	a, b := fmt.Sprintf(f, lo), fmt.Sprintf(f, hi)
	if a == b {
		return a
	}
	return a + "–" + b
}

// summaryMarkdown writes the README's table for the summaries.
func summaryMarkdown(w io.Writer, sums []runSummary, names, baseNames []string) {
	runs := 0
	for _, s := range sums {
		runs = max(runs, s.Runs)
	}
	fmt.Fprintf(w, "\n## shoal (3 managers) vs etcd (3 members): %d runs", runs)
	if len(baseNames) > 0 {
		fmt.Fprintf(w, ", and %d of the base build", len(baseNames))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Runs: %s.\n", strings.Join(names, ", "))
	if len(baseNames) > 0 {
		fmt.Fprintf(w, "Base: %s.\n", strings.Join(baseNames, ", "))
	}
	fmt.Fprintln(w, "Each ratio is shoal's writes/s over the etcd of the same run; ranges over the runs, median in bold.")
	fmt.Fprintln(w)
	head := "| writers | shoal writes/s | shoal/etcd | p99 shoal / etcd | shoal p99 above etcd's | CPU/write shoal / etcd (cluster + client) |"
	sep := "|---:|---|---|---|---|---|"
	if len(baseNames) > 0 {
		head += " base, same runs: shoal/etcd |"
		sep += "---|"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	for _, s := range sums {
		fmt.Fprintf(w, "| %d | %s | %s, **%.2f×** | %s / %s ms | %d of %d runs | %s + %s / %s + %s µs |",
			s.Concurrency, span("%.0f", s.ShoalOps), span("%.2f", s.Ratios), median(s.Ratios),
			span("%.1f", s.ShoalP99), span("%.1f", s.EtcdP99), s.P99Worse, s.Runs,
			span("%.0f", s.ShoalCPU), span("%.0f", s.ShoalClient), span("%.0f", s.EtcdCPU), span("%.0f", s.EtcdClient))
		if len(baseNames) > 0 {
			fmt.Fprintf(w, " %s, %.2f× |", span("%.2f", s.BaseRatios), median(s.BaseRatios))
		}
		fmt.Fprintln(w)
	}
}

// runSummarize is -summarize: read, fold, print; no cluster is started.
func runSummarize(w io.Writer, globs, baseGlobs string) error {
	runs, names, err := readRuns(globs)
	if err != nil {
		return fmt.Errorf("-summarize: %w", err)
	}
	var base []jsonReport
	var baseNames []string
	if baseGlobs != "" {
		if base, baseNames, err = readRuns(baseGlobs); err != nil {
			return fmt.Errorf("-summarize-base: %w", err)
		}
	}
	summaryMarkdown(w, summarize(runs, base), names, baseNames)
	return nil
}
