package deptest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The rules. Packages are named relative to the module: "x/..." is x and
// every package below it, "x" is x alone, "..." is every package. A
// package may always import its own subtree (the rule's from).
var rules = []rule{
	{from: "manager/...", never: []string{"agent/..."},
		why: "managers and agents never import each other: what both need lives in a shared leaf package (trust/, logstream/)"},
	{from: "agent/...", never: []string{"manager/..."},
		why: "managers and agents never import each other: what both need lives in a shared leaf package (trust/, logstream/)"},
	{from: "scheduler/...", only: []string{"proto/..."},
		why: "placement is pure: no I/O, no raft, nothing of Shoal but the API types"},
	{from: "raftstore/...", only: []string{"proto/..."},
		why: "the replicated store knows nothing of managers, agents or containers"},
	{from: "errdefs/...", only: []string{},
		why: "the error vocabulary is the leaf of leaves: every package, the store's callers and the trust package included, may use it"},
	{from: "trust/...", only: []string{"proto/...", "errdefs/..."},
		why: "the cluster's trust is a leaf that managers, agents, the daemon, the client and the CLI all import"},
	{from: "logstream/...", only: []string{"proto/...", "trust/...", "errdefs/..."},
		why: "log streaming is a leaf shared by the agents' API and the managers' log broker"},
	{from: "netnsrun/...", only: []string{},
		why: "switching a thread's network namespace is one leaf helper for the node network, the overlay and its tests"},
	{from: "datadir/...", only: []string{},
		why: "the data dir's layout and node.json are read by the daemon, the client and the CLI alike"},
	{from: "agent/health/...", only: []string{"proto/...", "netnsrun/..."},
		why: "health checks are the agent's probes and their state machine: exec goes through a runtime handed in, dials through netnsrun"},
	{from: "specrules/...", only: []string{"proto/..."},
		why: "one set of spec rules for the managers' API and the agents' translation"},
	{from: "netdelta/...", only: []string{"proto/..."},
		why: "one definition of a network state's delta, made by the managers' dispatcher and applied by the agents"},
	{from: "restartpolicy/...", only: []string{"proto/..."},
		why: "the restart rules are pure: the orchestrator decides with them and the CLI predicts with them"},
	{from: "metrics/...", only: []string{"proto/...", "raftstore/...", "trust/...", "errdefs/..."},
		why: "the metrics registries and collectors are a leaf that managers, agents and the daemon register into; they read the store and tasks through small interfaces"},
	{from: "manager/pipeline/...", only: []string{"proto/..."},
		why: "the pipeline is transport: it runs calls through the interceptor chain it is given and knows no service, store or role"},
	{from: "client/...", never: []string{"daemon/...", "manager/...", "agent/..."},
		why: "the client speaks the API with the trust package's credentials; it holds no role's code"},
	{from: "overlay/...", never: []string{"manager/..."}, yetToCome: true,
		why: "the data plane runs on every node and learns the cluster through the agent, not from manager code"},
	{from: "...", wiresRoles: true, except: []string{"cmd/...", "daemon/...", "e2e/..."},
		why: "only cmd/ and daemon/ wire the manager and agent roles together (e2e/ assembles clusters for tests as they do)"},
}

// module is Shoal's main module; rules and reports name packages relative
// to it.
const module = "github.com/shoal-dev/shoal"

// A rule constrains the Shoal imports, direct or through other packages,
// of the packages matching from (less except). It is one of:
//   - never: none of these may be reached, directly or through other
//     packages;
//   - only: nothing of Shoal but these (and from's own subtree) may be
//     imported directly (what those import is their rules' business);
//   - wiresRoles: a package outside manager/... and agent/... may not reach
//     both.
type rule struct {
	from       string
	except     []string
	never      []string
	only       []string
	wiresRoles bool
	yetToCome  bool // from matches no package yet; the rule waits for it
	why        string
}

func (r rule) String() string {
	var s string
	switch {
	case r.never != nil:
		s = fmt.Sprintf("%s never imports %s", r.from, strings.Join(r.never, ", "))
	case len(r.only) == 0 && r.only != nil:
		s = fmt.Sprintf("%s imports nothing of Shoal", r.from)
	case r.only != nil:
		s = fmt.Sprintf("%s imports nothing of Shoal but %s", r.from, strings.Join(r.only, ", "))
	case r.wiresRoles:
		s = "no package imports both manager/... and agent/..."
	}
	if len(r.except) > 0 {
		s += " (except " + strings.Join(r.except, ", ") + ")"
	}
	return s
}

// graph maps each package of the module to its direct imports within the
// module, both relative to the module.
type graph map[string][]string

// A violation is a package that breaks a rule, with the import path that
// breaks it (two paths, one to each side, for wiresRoles).
type violation struct {
	rule  rule
	paths [][]string
}

func (v violation) String() string {
	ps := make([]string, len(v.paths))
	for i, p := range v.paths {
		ps[i] = strings.Join(p, " → ")
	}
	return fmt.Sprintf("%s\n\tbreaks %q: %s", strings.Join(ps, " and "), v.rule, v.rule.why)
}

// match reports whether pkg matches pattern ("x/...", "x" or "...").
func match(pattern, pkg string) bool {
	if pattern == "..." {
		return true
	}
	if dir, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == dir || strings.HasPrefix(pkg, dir+"/")
	}
	return pkg == pattern
}

func matchAny(patterns []string, pkg string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return match(p, pkg) })
}

// check returns every violation of rules in g, in package order, then rule
// order.
func check(g graph, rules []rule) []violation {
	pkgs := make([]string, 0, len(g))
	for p := range g {
		pkgs = append(pkgs, p)
	}
	slices.Sort(pkgs)
	var out []violation
	for _, p := range pkgs {
		for _, r := range rules {
			if !match(r.from, p) || matchAny(r.except, p) {
				continue
			}
			if r.wiresRoles {
				if v, ok := checkWiring(g, r, p); ok {
					out = append(out, v)
				}
				continue
			}
			out = append(out, checkReach(g, r, p)...)
		}
	}
	return out
}

// checkReach reports what p imports that r forbids: for never, each
// forbidden package p reaches, directly or not, with the path to it; for
// only, each direct import that is not allowed (what an allowed package
// imports is its own rules' business). The walk does not go past a
// forbidden package (one report per bad edge) nor into another package of
// r.from (that one is checked on its own, so a bad edge is reported where
// it leaves the rule's scope, not again for each importer).
func checkReach(g graph, r rule, p string) []violation {
	var out []violation
	if r.only != nil {
		for _, q := range sorted(g[p]) {
			if !match(r.from, q) && !matchAny(r.only, q) {
				out = append(out, violation{rule: r, paths: [][]string{{p, q}}})
			}
		}
		return out
	}
	forbidden := func(q string) bool { return !match(r.from, q) && matchAny(r.never, q) }
	through := func(q string) bool { return !match(r.from, q) && !forbidden(q) }
	for q, path := range walk(g, p, through) {
		if forbidden(q) {
			out = append(out, violation{rule: r, paths: [][]string{path}})
		}
	}
	return out
}

// walk yields, breadth first and in sorted order, each package p reaches,
// once, with the path to it; it goes on from a package only if through
// says so.
func walk(g graph, p string, through func(string) bool) func(func(string, []string) bool) {
	return func(yield func(string, []string) bool) {
		parent := map[string]string{p: ""}
		queue := []string{p}
		for len(queue) > 0 {
			q := queue[0]
			queue = queue[1:]
			for _, d := range sorted(g[q]) {
				if _, seen := parent[d]; seen {
					continue
				}
				parent[d] = q
				if !yield(d, pathTo(parent, d)) {
					return
				}
				if through(d) {
					queue = append(queue, d)
				}
			}
		}
	}
}

func pathTo(parent map[string]string, q string) []string {
	var path []string
	for ; q != ""; q = parent[q] {
		path = append(path, q)
	}
	slices.Reverse(path)
	return path
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// Sides of the role rule.
const (
	managerSide = "manager/..."
	agentSide   = "agent/..."
)

// checkWiring reports p if it reaches both sides, unless p is itself on a
// side (the never rules speak for those) or one of its direct imports
// already wires the roles without an exception (that import is reported
// instead). A package that reaches both through an excepted wiring package
// (daemon/) is reported: it wires the roles by importing it.
func checkWiring(g graph, r rule, p string) (violation, bool) {
	if match(managerSide, p) || match(agentSide, p) || !wires(g, p) {
		return violation{}, false
	}
	for _, d := range g[p] {
		if !match(managerSide, d) && !match(agentSide, d) && !matchAny(r.except, d) && wires(g, d) {
			return violation{}, false
		}
	}
	v := violation{rule: r}
	for _, side := range []string{managerSide, agentSide} {
		for q, path := range walk(g, p, func(string) bool { return true }) {
			if match(side, q) {
				v.paths = append(v.paths, path)
				break
			}
		}
	}
	return v, true
}

// wires reports whether p reaches both sides.
func wires(g graph, p string) bool {
	var m, a bool
	for q := range walk(g, p, func(string) bool { return true }) {
		m = m || match(managerSide, q)
		a = a || match(agentSide, q)
	}
	return m && a
}

// goList lists the module's packages with their production imports (under
// the current GOOS and build tags: the tests run with -tags=seccomp).
func goList(t *testing.T) graph {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list imports: %v", err)
	}
	cmd := exec.Command(goTool, "list", "-json=ImportPath,Imports,Error", module+"/...")
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	consult(t, "..")
	g := graph{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath string
			Imports    []string
			Error      *struct{ Err string }
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if p.Error != nil {
			t.Fatalf("go list %s: %s", p.ImportPath, p.Error.Err)
		}
		name, ok := relative(p.ImportPath)
		if !ok {
			continue
		}
		g[name] = []string{}
		for _, imp := range p.Imports {
			if rel, ok := relative(imp); ok {
				g[name] = append(g[name], rel)
			}
		}
	}
	return g
}

// consult reads what go list read, through this process: go test caches a
// passing run and reuses it while the files and environment variables the
// test itself consulted are unchanged, and it cannot see what the go
// command it runs reads. So the test lists every directory of the module
// (a new file or package) and stats every Go file and go.mod (an edit), and
// reads the variables that change what go list reports.
func consult(t *testing.T, root string) {
	t.Helper()
	for _, v := range []string{"GOFLAGS", "GOOS", "GOARCH", "CGO_ENABLED", "GOEXPERIMENT"} {
		os.Getenv(v)
	}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil && path != root {
				return filepath.SkipDir // another module (bench/)
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") || d.Name() == "go.mod" {
			_, err = os.Stat(path)
		}
		return err
	})
	if err != nil {
		t.Fatalf("reading the module's files: %v", err)
	}
}

// relative returns path relative to the module, if it is in it.
func relative(path string) (string, bool) {
	if path == module {
		return ".", true
	}
	return strings.CutPrefix(path, module+"/")
}

// TestRules checks the module's imports against the rules.
func TestRules(t *testing.T) {
	g := goList(t)
	for _, must := range []string{"manager", "agent", "daemon", "trust", "proto/shoalv1"} {
		if _, ok := g[must]; !ok {
			t.Fatalf("go list did not list %s (it listed %d packages): the test cannot be trusted", must, len(g))
		}
	}
	for _, r := range rules {
		if r.yetToCome {
			continue
		}
		found := false
		for p := range g {
			found = found || match(r.from, p) && !matchAny(r.except, p)
		}
		if !found {
			t.Errorf("rule %q matches no package: renamed or removed? Fix the rule rather than drop it", r)
		}
	}
	for _, v := range check(g, rules) {
		t.Errorf("forbidden import: %s", v)
	}
}

// before is the import graph as it was before issue 8, trimmed to what the
// rules speak of, with the wiring of today's cmd/, daemon/ and e2e/.
var before = graph{
	"agent":                {"agent/image", "agent/runtime", "manager/ca", "proto/shoalv1", "specrules"},
	"agent/agentapi":       {"agent/image", "agent/logs", "manager/ca", "proto/shoalv1"},
	"agent/image":          {},
	"agent/logs":           {},
	"agent/runtime":        {"specrules"},
	"client":               {"manager/ca", "proto/shoalv1"},
	"cmd/shoal":            {"agent/runtime", "cmd/shoal/cli"},
	"cmd/shoal/cli":        {"agent/agentapi", "client", "daemon", "manager/ca", "proto/shoalv1"},
	"daemon":               {"agent", "agent/agentapi", "manager", "manager/ca", "manager/dispatcher", "raftstore"},
	"e2e/harness":          {"agent/network", "client", "daemon", "manager/controlapi"},
	"agent/network":        {},
	"manager":              {"manager/ca", "manager/controlapi", "manager/dispatcher", "manager/logbroker", "raftstore"},
	"manager/ca":           {"proto/shoalv1"},
	"manager/controlapi":   {"manager/ca", "proto/shoalv1", "raftstore", "scheduler", "specrules"},
	"manager/dispatcher":   {"manager/ca", "proto/shoalv1", "raftstore"},
	"manager/logbroker":    {"agent/agentapi", "manager/ca", "proto/shoalv1", "raftstore"},
	"proto/shoalv1":        {},
	"raftstore":            {"proto/shoalv1"},
	"scheduler":            {"proto/shoalv1"},
	"specrules":            {"proto/shoalv1"},
	"restartpolicy":        {"proto/shoalv1"},
	"manager/ca/catest":    {"manager/ca"},
	"manager/transport":    {"manager/ca"},
	"manager/forward":      {"manager/ca"},
	"manager/nodeca":       {"manager/ca", "proto/shoalv1", "raftstore"},
	"manager/membership":   {"manager/ca", "manager/forward", "proto/shoalv1", "raftstore"},
	"manager/orchestrator": {"proto/shoalv1", "raftstore", "scheduler"},
}

// after is before with issue 8's moves: trust/ and logstream/.
var after = graph{
	"agent":              {"agent/image", "agent/runtime", "trust", "proto/shoalv1", "specrules"},
	"agent/agentapi":     {"agent/image", "agent/logs", "logstream", "trust", "proto/shoalv1"},
	"agent/image":        {},
	"agent/logs":         {},
	"agent/runtime":      {"specrules"},
	"agent/network":      {},
	"client":             {"trust", "proto/shoalv1"},
	"cmd/shoal":          {"agent/runtime", "cmd/shoal/cli"},
	"cmd/shoal/cli":      {"client", "daemon", "logstream", "trust", "proto/shoalv1"},
	"daemon":             {"agent", "agent/agentapi", "manager", "trust", "manager/dispatcher", "raftstore"},
	"e2e/harness":        {"agent/network", "client", "daemon", "manager/controlapi"},
	"logstream":          {"proto/shoalv1", "trust"},
	"manager":            {"trust", "manager/controlapi", "manager/dispatcher", "manager/logbroker", "raftstore"},
	"manager/logbroker":  {"logstream", "trust", "proto/shoalv1", "raftstore"},
	"manager/controlapi": {"trust", "proto/shoalv1", "raftstore", "scheduler", "specrules"},
	"manager/dispatcher": {"trust", "proto/shoalv1", "raftstore"},
	"proto/shoalv1":      {},
	"raftstore":          {"proto/shoalv1"},
	"scheduler":          {"proto/shoalv1"},
	"specrules":          {"proto/shoalv1"},
	"trust":              {"proto/shoalv1"},
	"trust/trusttest":    {"trust"},
}

// TestCheckerBefore: the checker finds today's back-edges, each once,
// where it leaves the rule's scope (not again for manager/, which imports
// manager/logbroker, nor for daemon/ or cmd/, which may wire roles).
func TestCheckerBefore(t *testing.T) {
	got := reports(check(before, rules))
	want := []string{
		"agent → manager/ca",
		"agent/agentapi → manager/ca",
		"client → manager/ca",
		"manager/logbroker → agent/agentapi",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
	if after := check(after, rules); len(after) != 0 {
		t.Fatalf("after the moves: %v", after)
	}
}

// TestChecker: one forbidden edge at a time on the graph after the moves,
// each reported with the path and the rule it breaks.
func TestChecker(t *testing.T) {
	cases := []struct {
		name  string
		add   map[string][]string // edges added to after
		want  []string            // the reports' paths
		wantR string              // the rule broken (a substring of the report)
	}{
		{"manager imports agent", map[string][]string{"manager/dispatcher": {"agent"}},
			[]string{"manager/dispatcher → agent"}, `"manager/... never imports agent/..."`},
		{"agent imports manager", map[string][]string{"agent/runtime": {"manager/transport"}, "manager/transport": {"trust"}},
			[]string{"agent/runtime → manager/transport"}, `"agent/... never imports manager/..."`},
		{"through a package of no rule", map[string][]string{"manager/logbroker": {"util"}, "util": {"agent/logs"}},
			[]string{"manager/logbroker → util → agent/logs"}, "managers and agents never import each other"},
		{"scheduler imports raftstore", map[string][]string{"scheduler": {"raftstore"}},
			[]string{"scheduler → raftstore"}, `"scheduler/... imports nothing of Shoal but proto/..."`},
		{"raftstore imports specrules", map[string][]string{"raftstore": {"specrules"}},
			[]string{"raftstore → specrules"}, `"raftstore/... imports nothing of Shoal but proto/..."`},
		{"trust imports specrules", map[string][]string{"trust": {"specrules"}},
			[]string{"trust → specrules"}, `"trust/... imports nothing of Shoal but proto/..., errdefs/..."`},
		{"trust imports manager: agents reach it through trust", map[string][]string{"trust": {"manager/transport"}, "manager/transport": {"trust"}},
			[]string{"trust → manager/transport", "agent → trust → manager/transport", "agent/agentapi → trust → manager/transport", "client → trust → manager/transport"},
			`"agent/... never imports manager/..."`},
		{"logstream imports the agent API", map[string][]string{"logstream": {"agent/agentapi"}},
			// manager/logbroker reaches the agent through logstream too.
			[]string{"logstream → agent/agentapi", "manager/logbroker → logstream → agent/agentapi"}, "leaf shared by"},
		{"client imports daemon", map[string][]string{"client": {"daemon"}},
			[]string{"client → daemon", "client → daemon → manager and client → daemon → agent"}, `"client/... never imports daemon/..., manager/..., agent/..."`},
		{"overlay imports manager", map[string][]string{"overlay": {"manager/dispatcher"}},
			[]string{"overlay → manager/dispatcher"}, `"overlay/... never imports manager/..."`},
		{"a package wires roles", map[string][]string{"api": {"manager/controlapi", "agent/logs"}, "cmd/shoal-api": {"api"}},
			[]string{"api → manager/controlapi and api → agent/logs"}, "only cmd/ and daemon/ wire"},
		{"a package wires roles through daemon", map[string][]string{"tool": {"daemon"}},
			[]string{"tool → daemon → manager and tool → daemon → agent"}, `"no package imports both manager/... and agent/... (except cmd/..., daemon/..., e2e/...)"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := graph{}
			for p, imps := range after {
				g[p] = slices.Clone(imps)
			}
			for p, imps := range c.add {
				g[p] = append(g[p], imps...)
			}
			vs := check(g, rules)
			got := reports(vs)
			want := sorted(c.want)
			if !slices.Equal(sorted(got), want) {
				t.Fatalf("got\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
			}
			if !strings.Contains(vs[0].String(), c.wantR) {
				t.Errorf("report %q does not name the rule %q", vs[0], c.wantR)
			}
		})
	}
}

// TestMatch: the patterns of the rules.
func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, pkg string
		want         bool
	}{
		{"manager/...", "manager", true},
		{"manager/...", "manager/ca", true},
		{"manager/...", "managerial", false},
		{"manager", "manager/ca", false},
		{"...", "anything/at/all", true},
		{"trust/...", "trust/trusttest", true},
	} {
		if got := match(c.pattern, c.pkg); got != c.want {
			t.Errorf("match(%q, %q) = %v, want %v", c.pattern, c.pkg, got, c.want)
		}
	}
}

func reports(vs []violation) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i], _, _ = strings.Cut(v.String(), "\n")
	}
	return out
}

// TestCheckerLeaf: a rule that allows nothing of Shoal.
func TestCheckerLeaf(t *testing.T) {
	leaf := rule{from: "leaf/...", only: []string{}, why: "a leaf"}
	g := graph{"leaf": {"leaf/sub", "proto/shoalv1"}, "leaf/sub": {}, "proto/shoalv1": {}}
	vs := check(g, []rule{leaf})
	if len(vs) != 1 || !strings.HasPrefix(vs[0].String(), "leaf → proto/shoalv1\n\tbreaks \"leaf/... imports nothing of Shoal\": a leaf") {
		t.Fatalf("got %v, want leaf → proto/shoalv1 alone", vs)
	}
}
