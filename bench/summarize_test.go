package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeRun writes a -json report of one run: shoal (3 managers) and etcd
// cells per concurrency, built the way the benchmark builds them.
func writeRun(t *testing.T, path string, cells map[int][2]cellResult) {
	t.Helper()
	r := &report{Meta: reportMeta{Date: "2026-12-07 15:00 UTC"}}
	for c, pair := range cells {
		s, e := pair[0], pair[1]
		s.System, s.Members, s.Concurrency = "shoal", 3, c
		e.System, e.Members, e.Concurrency = "etcd", 3, c
		r.Cells = append(r.Cells, s, e)
	}
	b, err := json.Marshal(r.json())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func cell(ops float64, p99 time.Duration) cellResult {
	return cellResult{OpsPerSec: ops, P99: p99}
}

func TestSummarizeRangesAndMedians(t *testing.T) {
	dir := t.TempDir()
	ms := time.Millisecond
	// Three runs: ratios at 256 writers 1.5, 1.2, 1.1 (median 1.2); at one
	// writer 1.0, 0.9, 1.1 (median 1.0); shoal's p99 above etcd's in one
	// run at 256.
	runs := []map[int][2]cellResult{
		{1: {cell(1000, 2*ms), cell(1000, 3*ms)}, 256: {cell(15000, 30*ms), cell(10000, 40*ms)}},
		{1: {cell(900, 2*ms), cell(1000, 3*ms)}, 256: {cell(12000, 50*ms), cell(10000, 40*ms)}},
		{1: {cell(1100, 2*ms), cell(1000, 3*ms)}, 256: {cell(11000, 30*ms), cell(10000, 40*ms)}},
	}
	for i, r := range runs {
		writeRun(t, filepath.Join(dir, "shoal-0"+string(rune('1'+i))+".json"), r)
	}
	// Base: 0.8 and 1.0 at 256 writers (median 0.9 of an even count).
	writeRun(t, filepath.Join(dir, "base-01.json"), map[int][2]cellResult{256: {cell(8000, 30*ms), cell(10000, 40*ms)}})
	writeRun(t, filepath.Join(dir, "base-02.json"), map[int][2]cellResult{256: {cell(10000, 30*ms), cell(10000, 40*ms)}})

	var out strings.Builder
	if err := runSummarize(&out, filepath.Join(dir, "shoal-*.json"), filepath.Join(dir, "base-*.json")); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"3 runs, and 2 of the base build",
		"| 1 | 900–1100 | 0.90–1.10, **1.00×** | 2.0 / 3.0 ms | 0 of 3 runs |",
		"| 256 | 11000–15000 | 1.10–1.50, **1.20×** | 30.0–50.0 / 40.0 ms | 1 of 3 runs |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	// The base column: 256 writers only (the base ran no 1-writer cell).
	if !strings.Contains(got, "| 0.80–1.00, 0.90× |") {
		t.Errorf("base column of 256 writers is not 0.80–1.00, 0.90×:\n%s", got)
	}
	if i, j := strings.Index(got, "| 1 |"), strings.Index(got, "| 256 |"); i < 0 || j < i {
		t.Errorf("rows not in increasing concurrency:\n%s", got)
	}
}

func TestSummarizeRefusesWhatIsNotAReport(t *testing.T) {
	dir := t.TempDir()
	notJSON := filepath.Join(dir, "a.json")
	os.WriteFile(notJSON, []byte("| markdown |"), 0o644)
	shoalOnly := filepath.Join(dir, "b.json")
	r := &report{Cells: []cellResult{{System: "shoal", Members: 3, Concurrency: 1, OpsPerSec: 1}}}
	b, _ := json.Marshal(r.json())
	os.WriteFile(shoalOnly, b, 0o644)
	for _, tc := range []struct{ globs, want string }{
		{filepath.Join(dir, "none-*.json"), "names no file"},
		{notJSON, "a.json: not a bench -json report"},
		{shoalOnly, "b.json: no shoal-vs-etcd rows (run with -only all)"},
		{" , ", "no file given"},
	} {
		err := runSummarize(&strings.Builder{}, tc.globs, "")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("runSummarize(%q) = %v, want an error with %q", tc.globs, err, tc.want)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tc.xs); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
}

func TestRepeatFlags(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string // "" = accepted
	}{
		{[]string{"-runs", "3"}, "need -json-dir"},
		{[]string{"-runs", "0"}, "-runs must be >= 1"},
		{[]string{"-json-dir", dir}, "-json-dir goes with -runs"},
		{[]string{"-runs", "3", "-json-dir", dir, "-json", "x.json"}, "-json is for a single run"},
		{[]string{"-runs", "3", "-json-dir", dir, "-only", "shoal"}, "want -only all"},
		{[]string{"-runs", "3", "-json-dir", dir, "-failover", "2"}, "drop -failover"},
		{[]string{"-base-bin", filepath.Join(dir, "nosuch"), "-json-dir", dir}, "-base-bin"},
		{[]string{"-summarize-base", "x"}, "-summarize-base needs -summarize"},
		{[]string{"-runs", "3", "-json-dir", dir}, ""},
	} {
		_, err := parseFlags(tc.args)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q = %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}

func TestBinaryVersionOfANonGoFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x")
	os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755)
	if v := binaryVersion(p); v != "" {
		t.Errorf("binaryVersion(a script) = %q, want empty", v)
	}
}
