package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/agent/image"
	"github.com/shoal-dev/shoal/agent/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// addImage puts img in the fake store under ref and its digest (as the
// real store finds an image by either).
func (env *execEnv) addImage(ref string, img image.Image) {
	env.images.mu.Lock()
	defer env.images.mu.Unlock()
	env.images.images[ref] = img
	env.images.images[img.Digest] = img
}

// TestStopSignalFromImage: the image's StopSignal (nginx's SIGQUIT) stops
// the task when the spec names none; the spec's wins over it; signals
// the managers accept (PWR) are sent, not replaced by SIGTERM.
func TestStopSignalFromImage(t *testing.T) {
	env := newExecEnv(t)
	env.addImage("nginx:1", image.Image{Digest: "sha256:ngx", Layers: []string{"/layers/n"},
		Config: image.Config{Entrypoint: []string{"/bin/app"}, StopSignal: "SIGQUIT"}})
	for _, tc := range []struct {
		id, image, specSignal string
		wantCode              int32
	}{
		{"img", "nginx:1", "", 128 + 3},
		{"spec", "nginx:1", "SIGINT", 128 + 2},
		{"pwr", "app:1", "PWR", 128 + 30},
		{"default", "app:1", "", 128 + 15},
	} {
		tk := task(tc.id, tc.image, shoalv1.TaskState_TASK_STATE_RUNNING)
		tk.Spec.Container.StopSignal = tc.specSignal
		env.ex.Assign(false, []*shoalv1.Task{tk}, nil)
		env.waitStatus(tc.id, shoalv1.TaskState_TASK_STATE_RUNNING)
		stop := task(tc.id, tc.image, shoalv1.TaskState_TASK_STATE_SHUTDOWN)
		stop.Spec.Container.StopSignal = tc.specSignal
		env.ex.Assign(false, []*shoalv1.Task{stop}, nil)
		if st := env.waitStatus(tc.id, shoalv1.TaskState_TASK_STATE_SHUTDOWN); st.GetExitCode() != tc.wantCode {
			t.Errorf("%s: stopped with exit code %d, want %d", tc.id, st.GetExitCode(), tc.wantCode)
		}
	}
}

// TestRuntimeSpecHostnameAndInit: HOSTNAME is the container's hostname
// unless the spec sets it, over the image's; --init reaches the runtime.
func TestRuntimeSpecHostnameAndInit(t *testing.T) {
	env := newExecEnv(t)
	env.addImage("host:1", image.Image{Digest: "sha256:hst", Layers: []string{"/layers/h"},
		Config: image.Config{Entrypoint: []string{"/bin/app"}, Env: []string{"HOSTNAME=image-build-box"}}})
	named := task("named", "host:1", shoalv1.TaskState_TASK_STATE_RUNNING)
	named.Spec.Container.Hostname = "web-1"
	named.Spec.Container.Init = true
	own := task("own", "host:1", shoalv1.TaskState_TASK_STATE_RUNNING)
	own.Spec.Container.Env = []string{"HOSTNAME=mine"}
	long := task("abcdefghijklmnopqrstuvwxy", "app:1", shoalv1.TaskState_TASK_STATE_RUNNING)
	env.ex.Assign(false, []*shoalv1.Task{named, own, long}, nil)
	for id, want := range map[string]string{"named": "HOSTNAME=web-1", "own": "HOSTNAME=mine", "abcdefghijklmnopqrstuvwxy": "HOSTNAME=abcdefghijkl"} {
		env.waitStatus(id, shoalv1.TaskState_TASK_STATE_RUNNING)
		spec, _ := env.rt.Spec(id)
		var hn []string
		for _, e := range spec.Env {
			if strings.HasPrefix(e, "HOSTNAME=") {
				hn = append(hn, e)
			}
		}
		if !slices.Equal(hn, []string{want}) {
			t.Errorf("%s: HOSTNAME entries %v, want [%s]", id, hn, want)
		}
		if spec.Init != (id == "named") {
			t.Errorf("%s: runtime spec Init = %v", id, spec.Init)
		}
	}
}

// TestAgentRejectsWhatTheRulesRefuse: the agent applies the managers'
// rules (a spec stored before a rule existed, or forged) and the ones only
// it can judge, and rejects rather than adjusts: a bind source inside the
// node's data dir, directly or through a symlink; a stop signal it does
// not know; an image whose own StopSignal is unknown.
func TestAgentRejectsWhatTheRulesRefuse(t *testing.T) {
	env := newExecEnv(t)
	env.addImage("odd:1", image.Image{Digest: "sha256:odd", Layers: []string{"/layers/o"},
		Config: image.Config{Entrypoint: []string{"/bin/app"}, StopSignal: "SIGNOPE"}})
	link := filepath.Join(t.TempDir(), "innocent")
	if err := os.Symlink(env.dir, link); err != nil {
		t.Fatal(err)
	}
	bind := func(id, src string) *shoalv1.Task {
		tk := task(id, "app:1", shoalv1.TaskState_TASK_STATE_RUNNING)
		tk.Spec.Container.Mounts = []*shoalv1.Mount{{Type: "bind", Source: src, Target: "/data"}}
		return tk
	}
	badSig := task("badsig", "app:1", shoalv1.TaskState_TASK_STATE_RUNNING)
	badSig.Spec.Container.StopSignal = "SIGNOPE"
	devMount := task("devmount", "app:1", shoalv1.TaskState_TASK_STATE_RUNNING)
	devMount.Spec.Container.Mounts = []*shoalv1.Mount{{Type: "tmpfs", Target: "/dev/init"}}
	env.ex.Assign(false, []*shoalv1.Task{
		bind("datadir", filepath.Join(env.dir, "tasks")),
		bind("symlink", link),
		bind("fine", t.TempDir()),
		badSig, devMount,
		task("oddimage", "odd:1", shoalv1.TaskState_TASK_STATE_RUNNING),
	}, nil)
	for id, want := range map[string]string{
		"datadir":  "spec.task.container.mounts[0].source: " + `"` + filepath.Join(env.dir, "tasks") + `" is inside the node's data dir`,
		"symlink":  "spec.task.container.mounts[0].source: " + `"` + link + `" resolves to`,
		"badsig":   `spec.task.container.stop_signal: unknown signal "SIGNOPE"`,
		"devmount": "spec.task.container.mounts[0].target",
		"oddimage": `its StopSignal: unknown signal "SIGNOPE"`,
	} {
		if st := env.waitStatus(id, shoalv1.TaskState_TASK_STATE_REJECTED); !strings.Contains(st.GetErr(), want) {
			t.Errorf("%s: err %q, want it to contain %q", id, st.GetErr(), want)
		}
	}
	env.waitStatus("fine", shoalv1.TaskState_TASK_STATE_RUNNING)
}

// noInitRuntime is a runtime on a node without the init binary.
type noInitRuntime struct{ *runtime.Fake }

func (noInitRuntime) CheckInit() error { return errors.New("shoal-init is not installed") }

// TestInitMissingRejects: a node whose runtime has no init rejects a task
// that asks for one, saying why; tasks without --init still run.
func TestInitMissingRejects(t *testing.T) {
	env := &execEnv{t: t, dir: t.TempDir(), rt: runtime.NewFake(), images: newFakeImages(), net: &fakeNet{up: map[string]bool{}}}
	ex, err := NewExecutor(ExecutorConfig{Dir: env.dir, Runtime: noInitRuntime{env.rt}, Images: env.images, Network: env.net,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ex.mount = func(_ []string, _, _, target string) error {
		if err := os.MkdirAll(filepath.Join(target, "bin"), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(target, "bin/app"), []byte("#!"), 0o755)
	}
	ex.unmount = func(string) error { return nil }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ex.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	env.ex = ex
	withInit := running("init")
	withInit.Spec.Container.Init = true
	ex.Assign(false, []*shoalv1.Task{withInit, running("plain")}, nil)
	if st := env.waitStatus("init", shoalv1.TaskState_TASK_STATE_REJECTED); !strings.Contains(st.GetErr(), "spec.task.container.init: shoal-init is not installed") {
		t.Errorf("err %q", st.GetErr())
	}
	env.waitStatus("plain", shoalv1.TaskState_TASK_STATE_RUNNING)
}

// TestBindSourceDataDirBehindSymlink: a data dir configured through a
// symlink is protected under both of its names.
func TestBindSourceDataDirBehindSymlink(t *testing.T) {
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "shoal")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	e := &Executor{cfg: ExecutorConfig{Dir: filepath.Join(link, "agent"), NodeDataDir: link}}
	spec := func(src string) *shoalv1.TaskSpec {
		return &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "app:1",
			Mounts: []*shoalv1.Mount{{Type: "bind", Source: src, Target: "/data"}}}}
	}
	for _, src := range []string{filepath.Join(link, "certs"), filepath.Join(real, "certs"), real, filepath.Dir(real)} {
		err := e.checkSpec(spec(src))
		var rej rejectError
		if !errors.As(err, &rej) || !strings.Contains(err.Error(), "spec.task.container.mounts[0].source") {
			t.Errorf("%s: got %v, want a rejection naming the source", src, err)
		}
	}
	if err := e.checkSpec(spec(t.TempDir())); err != nil {
		t.Errorf("a source elsewhere: %v", err)
	}
}
