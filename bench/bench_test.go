package main

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i))
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {1, 1}, {0, 1}} {
		if got := percentile(s, tc.p); got != tc.want {
			t.Errorf("percentile(1..100, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("one sample: got %v", got)
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("no sample: got %v", got)
	}
}

func TestBenchValue(t *testing.T) {
	for _, tc := range []struct {
		w   int
		seq uint64
	}{{0, 0}, {255, 1}, {9999, 1<<64 - 1}} {
		v := benchValue(tc.w, tc.seq)
		if len(v) != valueLen {
			t.Errorf("benchValue(%d, %d) has %d bytes, want %d", tc.w, tc.seq, len(v), valueLen)
		}
	}
	if benchValue(1, 2) == benchValue(1, 3) || benchValue(1, 2) == benchValue(2, 2) {
		t.Error("values of different writers or sequence numbers are equal")
	}
}

func TestLoopbackList(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"127.0.0.21,127.0.0.22", true},
		{"127.1.2.3", true},
		{"10.0.0.1", false},
		{"192.168.1.1", false},
		{"::1", false},
		{"127.0.0.21,127.0.0.21", false},
		{"localhost", false},
	} {
		_, err := loopbackList(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("loopbackList(%q): err %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-failover", "3"})
	if err != nil {
		t.Fatal(err)
	}
	if o.only != "none" {
		t.Errorf("-failover alone: only = %q, want none", o.only)
	}
	o, err = parseFlags([]string{"-failover", "3", "-only", "etcd", "-concurrency", "1, 8"})
	if err != nil {
		t.Fatal(err)
	}
	if o.only != "etcd" || len(o.concs) != 2 || o.concs[1] != 8 {
		t.Errorf("got only=%q concs=%v", o.only, o.concs)
	}
	for _, bad := range [][]string{
		{"-only", "x"}, {"-concurrency", "0"}, {"-managers", "4"}, {"-etcd-ips", "127.0.0.1"},
		{"-worker-ip", "127.0.0.21"}, {"extra"},
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q): no error", bad)
		}
	}
}

func TestRatios(t *testing.T) {
	r := &report{Cells: []cellResult{
		{System: "shoal", Members: 1, Concurrency: 1, OpsPerSec: 500},
		{System: "shoal", Members: 3, Concurrency: 1, OpsPerSec: 200},
		{System: "etcd", Members: 3, Concurrency: 1, OpsPerSec: 400},
	}}
	rows := r.ratios()
	if len(rows) != 1 || rows[0].ShoalMembers != 3 || rows[0].Ratio != 0.5 {
		t.Errorf("ratios = %+v", rows)
	}
}

func TestStatCPU(t *testing.T) {
	for _, tc := range []struct {
		stat string
		want time.Duration
	}{
		// utime 150 and stime 25 ticks: 1.75 s.
		{"4242 (shoal) S 1 4242 4242 0 -1 4194560 9817 0 0 0 150 25 0 0 20 0 12 0 123 0 0", 1750 * time.Millisecond},
		// A command name with spaces and parentheses.
		{"7 (a b) c)) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 0 0", 70 * time.Millisecond},
		{"garbage", 0},
		{"1 (x) S 1", 0},
	} {
		if got := statCPU(tc.stat); got != tc.want {
			t.Errorf("statCPU(%q) = %v, want %v", tc.stat, got, tc.want)
		}
	}
	if procsCPU(nil) != 0 {
		t.Error("procsCPU(nil) != 0")
	}
}

func TestCPUPerOp(t *testing.T) {
	r := &report{Cells: []cellResult{
		{System: "shoal", Members: 3, Concurrency: 1, OpsPerSec: 200, Ops: 2000, ServerCPU: 2 * time.Second},
		{System: "etcd", Members: 3, Concurrency: 1, OpsPerSec: 400, Ops: 4000, ServerCPU: time.Second},
		{System: "etcd", Members: 3, Concurrency: 16, OpsPerSec: 0, Ops: 0, ServerCPU: time.Second},
	}}
	rows := r.ratios()
	if len(rows) != 1 || rows[0].ShoalCPUus != 1000 || rows[0].EtcdCPUus != 250 {
		t.Errorf("ratios = %+v", rows)
	}
	if (cellResult{ServerCPU: time.Second}).cpuPerOp() != 0 {
		t.Error("no op: CPU per op should be 0")
	}
}

// The benchmark's own CPU per write is reported beside the cluster's, in
// the ratio rows, the markdown and the JSON.
func TestClientCPUPerOp(t *testing.T) {
	r := &report{Cells: []cellResult{
		{System: "shoal", Members: 3, Concurrency: 256, OpsPerSec: 200, Ops: 2000, ServerCPU: 2 * time.Second, ClientCPU: 60 * time.Millisecond},
		{System: "etcd", Members: 3, Concurrency: 256, OpsPerSec: 400, Ops: 4000, ServerCPU: time.Second, ClientCPU: 100 * time.Millisecond},
	}}
	rows := r.ratios()
	if len(rows) != 1 || rows[0].ShoalClientCPUus != 30 || rows[0].EtcdClientCPUus != 25 {
		t.Errorf("ratios = %+v", rows)
	}
	var md strings.Builder
	r.markdown(&md)
	if !strings.Contains(md.String(), "| shoal | 3 | 256 | 200 | 0.00 | 0.00 | 0.0 | 0 | 1000 | 30 |") ||
		!strings.Contains(md.String(), "| 256 | 200 | 400 | 0.50 | 0.00 | 0.00 | 1000 | 250 | 30 | 25 |") {
		t.Errorf("markdown lacks the client CPU columns:\n%s", md.String())
	}
	if c := r.json().Cells[0]; c.ClientCPUus != 30 {
		t.Errorf("json cell client CPU = %v, want 30", c.ClientCPUus)
	}
	if (cellResult{ClientCPU: time.Second}).clientCPUPerOp() != 0 {
		t.Error("no op: client CPU per op should be 0")
	}
}

// runClosedLoop reads the benchmark process's own CPU over the measured
// window: writers that burn CPU in the process show up in ClientCPU.
func TestRunClosedLoopMeasuresClientCPU(t *testing.T) {
	burn := func(ctx context.Context, w int) error {
		// Spin until this process has used 1 ms more CPU (both writers
		// count): real CPU work inside the benchmark process, as a
		// client's would be.
		start := selfCPU()
		for selfCPU()-start < time.Millisecond && ctx.Err() == nil {
		}
		return nil
	}
	res, err := runClosedLoop(context.Background(), 2, 20*time.Millisecond, 300*time.Millisecond, time.Second, burn, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.ClientCPU <= 0 || res.clientCPUPerOp() < 100*time.Microsecond {
		t.Errorf("client CPU %v over %d ops (%v per op): the writers' CPU is not measured", res.ClientCPU, res.Ops, res.clientCPUPerOp())
	}
}

// Each member's CPU is kept apart (ServerCPU is their sum) and reported
// per write beside the client's, as is the whole machine's.
func TestMemberCPUPerOp(t *testing.T) {
	var reads atomic.Int64
	cpu := func() []time.Duration {
		n := time.Duration(reads.Add(1))
		return []time.Duration{n * 100 * time.Millisecond, n * 10 * time.Millisecond}
	}
	res, err := runClosedLoop(context.Background(), 1, 10*time.Millisecond, 50*time.Millisecond, time.Second,
		func(ctx context.Context, w int) error { return nil }, cpu)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.MemberCPU) != 2 || res.MemberCPU[0] != 100*time.Millisecond || res.MemberCPU[1] != 10*time.Millisecond || res.ServerCPU != 110*time.Millisecond {
		t.Fatalf("member CPU %v, server CPU %v; want [100ms 10ms], 110ms", res.MemberCPU, res.ServerCPU)
	}
	r := &report{Cells: []cellResult{{System: "shoal", Members: 2, Concurrency: 256, Ops: 1000, OpsPerSec: 100,
		ServerCPU: 110 * time.Millisecond, MemberCPU: []time.Duration{100 * time.Millisecond, 10 * time.Millisecond},
		MemberNames: []string{memberName("m1", true), memberName("m2", false)}, ClientCPU: 30 * time.Millisecond}}}
	var md strings.Builder
	r.markdown(&md)
	if want := "| shoal | 2 | 256 | m1 (leader) 100 · m2 10 | 30 | 140 |"; !strings.Contains(md.String(), want) {
		t.Errorf("markdown lacks %q:\n%s", want, md.String())
	}
	if c := r.json().Cells[0]; len(c.MemberCPUus) != 2 || c.MemberCPUus[0] != 100 || c.MemberNames[0] != "m1 (leader)" {
		t.Errorf("json cell = %+v", c)
	}
}
