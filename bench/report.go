package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// report is everything one run measured.
type report struct {
	Meta   reportMeta
	Cells  []cellResult
	Events []*sampleSet // failover and node-down timings

	Soak      []soakRound // -soak: the idle footprint after each round
	SoakTasks int
}

type reportMeta struct {
	Date         string `json:"date"`
	Go           string `json:"go"`
	CPUs         int    `json:"cpus"`
	Duration     string `json:"duration"`
	Warmup       string `json:"warmup"`
	ShoalVersion string `json:"shoal_version,omitempty"`
	EtcdVersion  string `json:"etcd_version,omitempty"`
	// Write is shoal's write (-write): patch or update.
	Write string `json:"write,omitempty"`
	// Agents: simulated agents connected to the shoal clusters through
	// the shoal cells (-agents), in the benchmark process; AgentsNetwork:
	// with an overlay network and a task per agent on it.
	Agents        int  `json:"agents"`
	AgentsNetwork bool `json:"agents_network,omitempty"`
	// AgentsIdleCPUms is the benchmark process's CPU (ms) per second with
	// the agents connected and no write (each shoal cluster's, last one).
	AgentsIdleCPUms float64 `json:"agents_idle_cpu_ms_per_s,omitempty"`
	// AgentsLeaderIdleCPUms is the leader's CPU (ms) per second in the
	// same window: what the open sessions cost it without writes.
	AgentsLeaderIdleCPUms float64 `json:"agents_leader_idle_cpu_ms_per_s,omitempty"`
}

func newReport(o *options) *report {
	return &report{Meta: reportMeta{
		Date: time.Now().UTC().Format("2006-01-02 15:04 MST"), Go: runtime.Version(), CPUs: runtime.NumCPU(),
		Duration: o.duration.String(), Warmup: o.warmup.String(), Write: o.write,
		Agents: o.agents, AgentsNetwork: o.agentsNetwork,
	}}
}

// ratioRow sets shoal and etcd side by side at one concurrency.
type ratioRow struct {
	Concurrency  int     `json:"concurrency"`
	ShoalMembers int     `json:"shoal_managers"`
	ShoalOps     float64 `json:"shoal_ops_per_sec"`
	EtcdOps      float64 `json:"etcd_ops_per_sec"`
	Ratio        float64 `json:"shoal_over_etcd"`
	ShoalP99ms   float64 `json:"shoal_p99_ms"`
	EtcdP99ms    float64 `json:"etcd_p99_ms"`
	// Cluster CPU (all members' user + system time) per write.
	ShoalCPUus float64 `json:"shoal_cpu_us_per_op"`
	EtcdCPUus  float64 `json:"etcd_cpu_us_per_op"`
	// The benchmark process's own CPU per write: the writers' client.
	ShoalClientCPUus float64 `json:"shoal_client_cpu_us_per_op"`
	EtcdClientCPUus  float64 `json:"etcd_client_cpu_us_per_op"`
}

// ratios pairs the 3-manager shoal cells (or the largest shoal cluster
// measured) with the etcd cells of the same concurrency.
func (r *report) ratios() []ratioRow {
	members, has3 := 0, false
	for _, c := range r.Cells {
		if c.System == "shoal" {
			members = max(members, c.Members)
			has3 = has3 || c.Members == 3
		}
	}
	if has3 {
		members = 3
	}
	var rows []ratioRow
	for _, s := range r.Cells {
		if s.System != "shoal" || s.Members != members {
			continue
		}
		for _, e := range r.Cells {
			if e.System == "etcd" && e.Concurrency == s.Concurrency && e.OpsPerSec > 0 {
				rows = append(rows, ratioRow{
					Concurrency: s.Concurrency, ShoalMembers: members, ShoalOps: s.OpsPerSec, EtcdOps: e.OpsPerSec,
					Ratio: s.OpsPerSec / e.OpsPerSec, ShoalP99ms: msf(s.P99), EtcdP99ms: msf(e.P99),
					ShoalCPUus: usf(s.cpuPerOp()), EtcdCPUus: usf(e.cpuPerOp()),
					ShoalClientCPUus: usf(s.clientCPUPerOp()), EtcdClientCPUus: usf(e.clientCPUPerOp()),
				})
			}
		}
	}
	return rows
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func usf(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// markdown writes the results as markdown tables.
func (r *report) markdown(w io.Writer) {
	m := r.Meta
	fmt.Fprintf(w, "\n## shoal whole-cluster benchmark (%s)\n\n", m.Date)
	parts := []string{fmt.Sprintf("%d CPUs", m.CPUs), m.Go}
	if m.ShoalVersion != "" {
		parts = append(parts, "shoal "+m.ShoalVersion)
	}
	if m.EtcdVersion != "" {
		parts = append(parts, "etcd "+m.EtcdVersion)
	}
	fmt.Fprintf(w, "One machine, every process on loopback (%s).\n", strings.Join(parts, ", "))
	if len(r.Cells) > 0 {
		fmt.Fprintf(w, "Each cell: %s warm-up, then %s measured; closed loop, one outstanding call per writer;\n", m.Warmup, m.Duration)
		fmt.Fprintf(w, "fsync on. shoal: %s of a 0-replica service per writer (100-byte label value,\n", shoalWriteName(m.Write))
		fmt.Fprintln(w, "version from the previous write), client connected to the leader. etcd: Put of a 100-byte")
		fmt.Fprintln(w, "value to a key per writer, client connected to the leader. CPU/op: user + system time of")
		fmt.Fprintln(w, "all the cluster's processes in the measured window over the writes counted; client CPU/op:")
		fmt.Fprintln(w, "the benchmark process's own (the writers' client side), same window and count.")
		if m.Agents > 0 {
			net := ""
			if m.AgentsNetwork {
				net = ", and a service of one RUNNING task per agent on an overlay network"
			}
			fmt.Fprintf(w, "Agents: %d simulated agents connected to the shoal cluster through its cells%s.\n", m.Agents, net)
			fmt.Fprintf(w, "They run in the benchmark process: their CPU is in the shoal cells' client CPU (idle, no write: %.1f ms per s;\n", m.AgentsIdleCPUms)
			fmt.Fprintf(w, "the leader's in the same window: %.1f ms per s).\n", m.AgentsLeaderIdleCPUms)
		} else {
			fmt.Fprintln(w, "Agents: none connected (0).")
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| system | members | writers | ops/s | p50 (ms) | p99 (ms) | max (ms) | errors | CPU/op (µs) | client CPU/op (µs) |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, c := range r.Cells {
			fmt.Fprintf(w, "| %s | %d | %d | %.0f | %.2f | %.2f | %.1f | %d | %.0f | %.0f |\n",
				c.System, c.Members, c.Concurrency, c.OpsPerSec, msf(c.P50), msf(c.P99), msf(c.Max), c.Errors, usf(c.cpuPerOp()), usf(c.clientCPUPerOp()))
		}
		if rows := r.ratios(); len(rows) > 0 {
			fmt.Fprintf(w, "\n### shoal (%d managers) vs etcd (3 members), same run\n\n", rows[0].ShoalMembers)
			fmt.Fprintln(w, "| writers | shoal ops/s | etcd ops/s | shoal/etcd | shoal p99 (ms) | etcd p99 (ms) | shoal CPU/op (µs) | etcd CPU/op (µs) | shoal client CPU/op (µs) | etcd client CPU/op (µs) |")
			fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
			for _, x := range rows {
				fmt.Fprintf(w, "| %d | %.0f | %.0f | %.2f | %.2f | %.2f | %.0f | %.0f | %.0f | %.0f |\n",
					x.Concurrency, x.ShoalOps, x.EtcdOps, x.Ratio, x.ShoalP99ms, x.EtcdP99ms, x.ShoalCPUus, x.EtcdCPUus, x.ShoalClientCPUus, x.EtcdClientCPUus)
			}
		}
		if hasMemberCPU(r.Cells) {
			fmt.Fprint(w, "\n### CPU per write by process (µs): each cluster member, and the benchmark's own client side\n\n")
			fmt.Fprintln(w, "| system | members | writers | members' CPU/op | client CPU/op | whole machine CPU/op |")
			fmt.Fprintln(w, "|---|---:|---:|---|---:|---:|")
			for _, c := range r.Cells {
				var parts []string
				for i, d := range c.memberCPUPerOp() {
					name := fmt.Sprintf("#%d", i+1)
					if i < len(c.MemberNames) {
						name = c.MemberNames[i]
					}
					parts = append(parts, fmt.Sprintf("%s %.0f", name, usf(d)))
				}
				fmt.Fprintf(w, "| %s | %d | %d | %s | %.0f | %.0f |\n", c.System, c.Members, c.Concurrency, strings.Join(parts, " · "),
					usf(c.clientCPUPerOp()), usf(c.cpuPerOp()+c.clientCPUPerOp()))
			}
		}
		for _, c := range r.Cells {
			if c.FirstError != "" {
				fmt.Fprintf(w, "\nFirst error, %s %d members, %d writers: `%s`\n", c.System, c.Members, c.Concurrency, c.FirstError)
			}
		}
	}
	for _, s := range r.Events {
		fmt.Fprintf(w, "\n### %s: %s\n\n", s.Name, s.What)
		if len(s.Samples) == 0 {
			fmt.Fprintln(w, "No sample.")
			continue
		}
		var all []string
		for _, d := range s.Samples {
			all = append(all, fmt.Sprintf("%.0f", msf(d)))
		}
		fmt.Fprintln(w, "| runs | p50 (ms) | p99 (ms) | max (ms) | samples (ms) |")
		fmt.Fprintln(w, "|---:|---:|---:|---:|---|")
		fmt.Fprintf(w, "| %d | %.0f | %.0f | %.0f | %s |\n", len(s.Samples), msf(s.p50()), msf(s.p99()), msf(s.max()), strings.Join(all, ", "))
		for _, n := range s.Notes {
			fmt.Fprintf(w, "\n- %s", n)
		}
		if len(s.Notes) > 0 {
			fmt.Fprintln(w)
		}
	}
	soakMarkdown(w, r.SoakTasks, r.Soak)
}

// hasMemberCPU says whether any cell has per-process CPU figures.
func hasMemberCPU(cells []cellResult) bool {
	for _, c := range cells {
		if len(c.MemberCPU) > 0 {
			return true
		}
	}
	return false
}

// jsonReport is the -json form; times in milliseconds.
type jsonReport struct {
	Meta   reportMeta    `json:"meta"`
	Cells  []jsonCell    `json:"cells,omitempty"`
	Ratios []ratioRow    `json:"shoal_vs_etcd,omitempty"`
	Events []jsonSamples `json:"events,omitempty"`
	Soak   []soakRound   `json:"soak,omitempty"`
}

type jsonCell struct {
	System      string  `json:"system"`
	Members     int     `json:"members"`
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	Ops         int     `json:"ops"`
	Errors      int     `json:"errors"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	CPUusPerOp  float64 `json:"cpu_us_per_op"`
	ClientCPUus float64 `json:"client_cpu_us_per_op"`
	// MemberCPUus is each member's CPU per write, named by MemberNames.
	MemberCPUus []float64 `json:"member_cpu_us_per_op,omitempty"`
	MemberNames []string  `json:"member_names,omitempty"`
	FirstError  string    `json:"first_error,omitempty"`
}

type jsonSamples struct {
	Name      string    `json:"name"`
	What      string    `json:"what"`
	P50ms     float64   `json:"p50_ms"`
	MaxMs     float64   `json:"max_ms"`
	SamplesMs []float64 `json:"samples_ms"`
	Notes     []string  `json:"notes,omitempty"`
}

func (r *report) json() jsonReport {
	out := jsonReport{Meta: r.Meta, Ratios: r.ratios(), Soak: r.Soak}
	for _, c := range r.Cells {
		var members []float64
		for _, d := range c.memberCPUPerOp() {
			members = append(members, usf(d))
		}
		out.Cells = append(out.Cells, jsonCell{
			MemberCPUus: members, MemberNames: c.MemberNames,
			System: c.System, Members: c.Members, Concurrency: c.Concurrency, Seconds: c.Duration.Seconds(),
			Ops: c.Ops, Errors: c.Errors, OpsPerSec: c.OpsPerSec, P50ms: msf(c.P50), P99ms: msf(c.P99), MaxMs: msf(c.Max),
			CPUusPerOp: usf(c.cpuPerOp()), ClientCPUus: usf(c.clientCPUPerOp()), FirstError: c.FirstError,
		})
	}
	for _, s := range r.Events {
		js := jsonSamples{Name: s.Name, What: s.What, P50ms: msf(s.p50()), MaxMs: msf(s.max()), Notes: s.Notes, SamplesMs: []float64{}}
		for _, d := range s.Samples {
			js.SamplesMs = append(js.SamplesMs, msf(d))
		}
		out.Events = append(out.Events, js)
	}
	return out
}

// write prints the markdown to w and, when jsonPath is set, the JSON to
// that file ("-": to w, after the markdown).
func (r *report) write(w io.Writer, jsonPath string) error {
	r.markdown(w)
	if jsonPath == "" {
		return nil
	}
	b, err := json.MarshalIndent(r.json(), "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if jsonPath == "-" {
		fmt.Fprintln(w)
		_, err = w.Write(b)
		return err
	}
	return os.WriteFile(jsonPath, b, 0o644)
}
