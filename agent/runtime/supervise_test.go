package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer/exeseal"

	"github.com/shoal-dev/shoal/agent/runtime/supervisor"
	"github.com/shoal-dev/shoal/specrules"
)

// The C supervisor (supervisor/supervise_linux.c) is tested for real: a
// helper process (this test binary, see maybeSuperviseHelper) starts a
// "container" (/bin/sh with a script) with pipes as its stdout and stderr,
// then execs shoal-shim into the supervisor exactly as a shim does, so the
// child is the supervisor's. The test waits for the helper, which is the
// supervisor by then, and reads what it wrote.

const superviseHelperEnv = "SHOAL_TEST_SUPERVISE_HELPER"

type superviseJob struct {
	Shim   string        `json:"shim"`
	Script string        `json:"script"`
	Args   superviseArgs `json:"args"`
	// ForeignPid, if set, is given to the supervisor instead of its
	// child's pid.
	ForeignPid int `json:"foreign_pid,omitempty"`
}

// maybeSuperviseHelper runs in TestMain: if this process is the helper,
// start the script and become the supervisor.
func maybeSuperviseHelper() {
	v := os.Getenv(superviseHelperEnv)
	if v == "" {
		return
	}
	var job superviseJob
	if err := json.Unmarshal([]byte(v), &job); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cmd := exec.Command("/bin/sh", "-c", job.Script)
	cmd.Stdout, cmd.Stderr = outW, errW
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	outW.Close()
	errW.Close()
	a := job.Args
	a.Stdout, a.Stderr, a.Pid = int(outR.Fd()), int(errR.Fd()), cmd.Process.Pid
	if job.ForeignPid != 0 {
		a.Pid = job.ForeignPid
	}
	err = execSupervisor(job.Shim, a)
	fmt.Fprintln(os.Stderr, "exec supervisor:", err)
	os.Exit(3)
}

// runSupervised runs script under the supervisor and returns the task dir
// (holding exit.json) once the supervisor has exited; what it said on
// its stderr (shim.log for a real shim) is returned too. The ready
// socket's message is checked.
func runSupervised(t *testing.T, script string, a superviseArgs) (string, string) {
	t.Helper()
	return runSupervisedJob(t, superviseJob{Script: script, Args: a})
}

func runSupervisedJob(t *testing.T, job superviseJob) (string, string) {
	t.Helper()
	a := job.Args
	dir := t.TempDir()
	a.TaskDir = dir
	if a.ContainerState == "" {
		a.ContainerState = filepath.Join(dir, "ctr")
	}
	if a.LogPath == "" {
		a.LogPath = filepath.Join(dir, "task.log")
	}
	if a.LogMaxBytes == 0 {
		a.LogMaxBytes, a.LogMaxFiles = defaultLogMaxBytes, defaultLogMaxFiles
	}
	rr, rw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer rr.Close()
	a.Ready = 3 // the helper's ExtraFiles[0]
	job.Shim, job.Args = shimBin, a
	b, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), superviseHelperEnv+"="+string(b))
	cmd.ExtraFiles = []*os.File{rw}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rw.Close()
	msg := make([]byte, 16)
	n, _ := rr.Read(msg)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("supervisor: %v; stderr:\n%s", err, stderr.String())
	}
	if string(msg[:n]) != "{}" {
		t.Errorf("ready message %q, want {}", msg[:n])
	}
	return dir, stderr.String()
}

func mustExit(t *testing.T, dir string) *ExitStatus {
	t.Helper()
	ex, ok := readExit(dir)
	if !ok {
		t.Fatal("no exit.json")
	}
	if ex.FinishedAt.IsZero() || time.Since(ex.FinishedAt) > time.Hour || time.Since(ex.FinishedAt) < 0 {
		t.Errorf("finished_at %v", ex.FinishedAt)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".exit.json.*")); len(m) != 0 {
		t.Errorf("temp files left: %v", m)
	}
	return ex
}

// TestSupervisorStreamsAndExit: stdout and stderr both end up in the log
// in order per stream, a line longer than 16 KiB is split into records
// of 16 KiB, the exit code is recorded, and the container's state dir
// and cgroup dirs are removed after the exit.
func TestSupervisorStreamsAndExit(t *testing.T) {
	ctr := filepath.Join(t.TempDir(), "state")
	cg := filepath.Join(t.TempDir(), "cgroup")
	for _, d := range []string{filepath.Join(ctr, "sub"), cg} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(ctr, "sub", "state.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	script := `echo out1; echo err1 >&2; echo out2; head -c 40000 /dev/zero | tr '\0' x; echo; printf tail >&2; exit 7`
	dir, stderr := runSupervised(t, script, superviseArgs{ContainerState: ctr, Cgroups: []string{cg, cg}})
	ex := mustExit(t, dir)
	if ex.Code != 7 || ex.Signal != 0 || ex.OOMKilled || ex.Error != "" {
		t.Errorf("exit %+v, want code 7", ex)
	}
	recs, err := ReadLog(filepath.Join(dir, "task.log"))
	if err != nil {
		t.Fatal(err)
	}
	var out, errs []string
	for _, r := range recs {
		switch r.Stream {
		case "stdout":
			out = append(out, r.Log)
		case "stderr":
			errs = append(errs, r.Log)
		default:
			t.Errorf("stream %q", r.Stream)
		}
		if r.Time.IsZero() {
			t.Errorf("record without time: %+v", r)
		}
	}
	big := strings.Repeat("x", 40000) + "\n"
	want := []string{"out1\n", "out2\n", big[:maxLogLine], big[maxLogLine : 2*maxLogLine], big[2*maxLogLine:]}
	if fmt.Sprint(out) != fmt.Sprint(want) {
		t.Errorf("stdout records (lengths) %v, want %v", lens(out), lens(want))
	}
	if fmt.Sprint(errs) != fmt.Sprint([]string{"err1\n", "tail"}) {
		t.Errorf("stderr records %q", errs)
	}
	for _, gone := range []string{ctr, cg} {
		if _, err := os.Stat(gone); !os.IsNotExist(err) {
			t.Errorf("%s not removed: %v (supervisor said %q)", gone, err, stderr)
		}
	}
}

func lens(ss []string) []int {
	var n []int
	for _, s := range ss {
		n = append(n, len(s))
	}
	return n
}

// TestSupervisorSignalledAndOOM: a container killed by a signal exits
// 128+signal with the signal recorded; a SIGKILL with an OOM kill counted
// in its memory cgroup is an OOM kill.
func TestSupervisorSignalledAndOOM(t *testing.T) {
	dir, _ := runSupervised(t, `kill -TERM $$`, superviseArgs{})
	if ex := mustExit(t, dir); ex.Code != 128+int(syscall.SIGTERM) || ex.Signal != int(syscall.SIGTERM) || ex.OOMKilled {
		t.Errorf("SIGTERM: exit %+v", ex)
	}
	mem := t.TempDir()
	if err := os.WriteFile(filepath.Join(mem, "memory.oom_control"), []byte("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir, _ = runSupervised(t, `echo before; kill -KILL $$`, superviseArgs{MemCgroup: mem})
	if ex := mustExit(t, dir); ex.Code != 137 || ex.Signal != 9 || !ex.OOMKilled {
		t.Errorf("OOM: exit %+v", ex)
	}
	if recs, err := ReadLog(filepath.Join(dir, "task.log")); err != nil || len(recs) != 1 || recs[0].Log != "before\n" {
		t.Errorf("log %+v, %v", recs, err)
	}
}

// TestSupervisorNotItsChild: a pid the supervisor cannot wait for (not
// its child) ends in an exit status with the reason, not in a busy loop
// on the pidfd.
func TestSupervisorNotItsChild(t *testing.T) {
	dir, _ := runSupervisedJob(t, superviseJob{Script: "echo hi", ForeignPid: os.Getpid()})
	ex := mustExit(t, dir)
	if ex.Code != 255 || !strings.Contains(ex.Error, "wait: No child processes") {
		t.Errorf("exit %+v", ex)
	}
	if recs, err := ReadLog(filepath.Join(dir, "task.log")); err != nil || len(recs) != 1 {
		t.Errorf("log %+v, %v", recs, err)
	}
}

// TestSupervisorLogRotation: with a small limit the supervisor keeps
// MaxFiles files, none above the limit, and the newest lines in order.
func TestSupervisorLogRotation(t *testing.T) {
	dir, _ := runSupervised(t, `i=0; while [ $i -lt 40 ]; do echo "line $i"; i=$((i+1)); done`,
		superviseArgs{LogMaxBytes: 300, LogMaxFiles: 3})
	mustExit(t, dir)
	log := filepath.Join(dir, "task.log")
	if _, err := os.Stat(log + ".3"); !os.IsNotExist(err) {
		t.Errorf("%s.3 exists: more than 3 files", log)
	}
	var lines []string
	for _, p := range []string{log + ".2", log + ".1", log} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 300 {
			t.Errorf("%s is %d bytes, limit 300", p, fi.Size())
		}
		recs, err := ReadLog(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			lines = append(lines, r.Log)
		}
	}
	if len(lines) == 0 || len(lines) >= 40 || lines[len(lines)-1] != "line 39\n" {
		t.Fatalf("kept %d lines ending %q", len(lines), lines[len(lines)-1:])
	}
	first := 40 - len(lines)
	for i, l := range lines {
		if l != fmt.Sprintf("line %d\n", first+i) {
			t.Fatalf("line %d is %q: not the newest lines in order", i, l)
		}
	}
}

// TestSupervisorLogFormatMatchesGo: the C writer and log.go's writer turn
// the same bytes into the same records, byte for byte but for the time:
// JSON escaping (HTML characters, control bytes, invalid UTF-8 as
// \ufffd, U+2028/9), multibyte runes, a rune cut by the 16 KiB split.
func TestSupervisorLogFormatMatchesGo(t *testing.T) {
	var in bytes.Buffer
	in.WriteString("plain\n<a href=\"x\">&amp;</a>\\ \x01\x02\b\f\t\r\x1f\x7f\n")
	in.WriteString("bad \xff \xc0\xaf \xed\xa0\x80 \xe2\x82 \xf4\x90\x80\x80 end\n")
	in.WriteString("sep \u2028 \u2029 é ü 日本 😀\n")
	in.WriteString(strings.Repeat("a", maxLogLine-1) + "é" + "rest\n") // é cut in two
	in.WriteString("no newline at the end")
	src := filepath.Join(t.TempDir(), "input")
	if err := os.WriteFile(src, in.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	dir, _ := runSupervised(t, "cat "+src, superviseArgs{})
	mustExit(t, dir)
	goLog := filepath.Join(t.TempDir(), "go.log")
	l, err := openLogFile(goLog, LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.copyLines("stdout", bytes.NewReader(in.Bytes())); err != nil {
		t.Fatal(err)
	}
	l.Close()
	cb, err := os.ReadFile(filepath.Join(dir, "task.log"))
	if err != nil {
		t.Fatal(err)
	}
	gb, err := os.ReadFile(goLog)
	if err != nil {
		t.Fatal(err)
	}
	timeRE := regexp.MustCompile(`^\{"time":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z)",`)
	mask := func(b []byte) []string {
		lines := strings.SplitAfter(string(b), "\n")
		for i, s := range lines {
			if s == "" {
				continue
			}
			m := timeRE.FindStringSubmatch(s)
			if m == nil {
				t.Errorf("record %d has no time in Go's format: %.80q", i, s)
				continue
			}
			lines[i] = timeRE.ReplaceAllString(s, `{"time":"T",`)
		}
		return lines
	}
	c, g := mask(cb), mask(gb)
	if len(c) != len(g) {
		t.Fatalf("C wrote %d records, Go %d", len(c), len(g))
	}
	for i := range c {
		if c[i] != g[i] {
			t.Errorf("record %d differs:\nC:  %.200q\nGo: %.200q", i, c[i], g[i])
		}
	}
	if _, err := ReadLog(filepath.Join(dir, "task.log")); err != nil {
		t.Errorf("Go's reader on the C log: %v", err)
	}
}

// TestSupervisorVerb: the verb the Go shim execs with is the one the C
// constructor answers to.
func TestSupervisorVerb(t *testing.T) {
	if superviseVerb != supervisor.Verb {
		t.Errorf("runtime's %q != supervisor.Verb %q", superviseVerb, supervisor.Verb)
	}
}

// TestLimitsMatchSpecrules: the runtime's copies of specrules' limits
// (it does not import specrules, see runtime.go) are equal.
func TestLimitsMatchSpecrules(t *testing.T) {
	if maxTaskID != specrules.MaxTaskID || minMemoryBytes != specrules.MinMemoryBytes ||
		maxMemoryBytes != specrules.MaxMemoryBytes || cpuPeriodMicros != specrules.CPUPeriodMicros ||
		minNanoCPUs != specrules.MinNanoCPUs || maxNanoCPUs != specrules.MaxNanoCPUs {
		t.Error("the runtime's limits differ from specrules'")
	}
	for _, id := range []string{"", "a", "A-b_c.d", "-a", ".", "..", "a/b", "a b", strings.Repeat("x", 128), strings.Repeat("x", 129), "é"} {
		if validID(id) != (specrules.TaskID(id) == nil) {
			t.Errorf("validID(%q) = %v, specrules.TaskID says %v", id, validID(id), specrules.TaskID(id))
		}
	}
}

// TestShimBinaryHasNoAPI: shoal-shim (every container's init) stays free
// of the API's protobuf and gRPC packages, whose initialisation every
// container start would pay for.
func TestShimBinaryHasNoAPI(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/shoal-dev/shoal/cmd/shoal-shim").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "google.golang.org/") || strings.HasPrefix(p, "github.com/shoal-dev/shoal/proto") ||
			p == "github.com/shoal-dev/shoal/specrules" {
			t.Errorf("cmd/shoal-shim depends on %s", p)
		}
	}
}

// TestSpareShimIsSealedCopy: a shim runs from the runtime's sealed memfd
// copy of shoal-shim (so libcontainer gives each container's init that
// /proc/self/exe instead of an overlayfs per container), calls itself
// shoal-shim, and has GOMAXPROCS=1 and GOGC=off.
func TestSpareShimIsSealedCopy(t *testing.T) {
	rt := newRuntime(t)
	if err := rt.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	pid := spareOf(rt).cmd.Process.Pid
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(exe, "/memfd:") {
		t.Errorf("shim runs %s, want the sealed memfd", exe)
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range shimEnv {
		if !bytes.Contains(append([]byte{0}, env...), []byte("\x00"+kv+"\x00")) {
			t.Errorf("shim environment lacks %s", kv)
		}
	}
	// The shim writes its name once it is up (Prepare returned).
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err != nil || strings.TrimSpace(string(comm)) != ShimBinaryName {
		t.Errorf("shim's comm %q, %v", comm, err)
	}
}

// TestMissingShimBinary: without shoal-shim the runtime says what is
// missing and how to build it, and Start leaves nothing behind.
func TestMissingShimBinary(t *testing.T) {
	root := filepath.Join(t.TempDir(), "state")
	rt, err := NewLibcontainer(root, nil, WithCgroupParent(testCgroupParent), WithShimBinary("/nonexistent/shoal-shim"))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	err = rt.Start(context.Background(), Spec{ID: "noshim", Rootfs: t.TempDir(), Args: []string{"/bin/true"}}, filepath.Join(t.TempDir(), "log"))
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/shoal-shim is missing") {
		t.Fatalf("Start: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "noshim")); !os.IsNotExist(err) {
		t.Errorf("state dir left: %v", err)
	}
	t.Setenv("PATH", "/nonexistent")
	rt2, err := NewLibcontainer(filepath.Join(t.TempDir(), "state"), nil, WithCgroupParent(testCgroupParent))
	if err != nil {
		t.Fatal(err)
	}
	defer rt2.Close()
	if err := rt2.Prepare(context.Background()); err == nil || !strings.Contains(err.Error(), "make build builds it") {
		t.Errorf("Prepare without shoal-shim in PATH: %v", err)
	}
}

// TestShimBuildFlagsEverywhere: the Makefile and the bench build
// shoal-shim with ShimBuildArgs (the tests and the e2e harness use the
// variable itself).
func TestShimBuildFlagsEverywhere(t *testing.T) {
	tags, ldflags := ShimBuildArgs[1], ShimBuildArgs[3]
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mk), "-ldflags '"+ldflags+"' -o bin/shoal-shim") ||
		!strings.Contains(string(mk), "-tags '$(GOTAGS),"+strings.TrimPrefix(tags, "seccomp,")+"'") {
		t.Errorf("the Makefile does not build bin/shoal-shim with %q", ShimBuildArgs)
	}
	b, err := os.ReadFile("../../bench/main.go")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"-tags", "`+tags+`", "-ldflags", "`+ldflags+`"`) {
		t.Errorf("bench/main.go does not build shoal-shim with %q", ShimBuildArgs)
	}
}

// BenchmarkSealPerContainer is what libcontainer does for each container
// whose init does not already run from a sealed memfd: seal
// /proc/self/exe with a read-only overlayfs (or copy it). The runtime's
// shims skip it (see sealedShim).
func BenchmarkSealPerContainer(b *testing.B) {
	dir := b.TempDir()
	b.Run("overlayfs", func(b *testing.B) {
		for b.Loop() {
			f, err := exeseal.CloneSelfExe(dir)
			if err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
	// The fallback: a copy of the binary into a memfd (this test binary;
	// the shoal binary is about twice its size).
	b.Run("memfd-copy", func(b *testing.B) {
		exe, err := os.Open("/proc/self/exe")
		if err != nil {
			b.Fatal(err)
		}
		defer exe.Close()
		fi, err := exe.Stat()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(fi.Size())/(1<<20), "MiB")
		for b.Loop() {
			if _, err := exe.Seek(0, 0); err != nil {
				b.Fatal(err)
			}
			f, err := exeseal.CloneBinary(exe, fi.Size(), "bench", dir)
			if err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
}
