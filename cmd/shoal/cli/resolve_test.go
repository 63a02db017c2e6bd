package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestShortImage(t *testing.T) {
	for in, want := range map[string]string{
		"demo:latest":                "demo:latest",
		"reg:5000/app:1@sha256:abcd": "reg:5000/app:1",
		"reg:5000/app@sha256:abcd":   "reg:5000/app@sha256:abcd", // no tag to show
		"app@sha256:abcd":            "app@sha256:abcd",
	} {
		if got := shortImage(in); got != want {
			t.Errorf("shortImage(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPinImageSilentRegistry: a registry that does not answer — a port
// that refuses, or a listener that accepts and never replies — costs at
// most one lookup: the command goes on unpinned with a one-line warning,
// and the next commands within silentFor skip the lookup (no connection
// is made) and say why; once the entry is older, the registry is asked
// again. A registry that answers (even "no such tag") is not remembered.
func TestPinImageSilentRegistry(t *testing.T) {
	refusing, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusingAddr := refusing.Addr().String()
	refusing.Close()

	hanging, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex // guards held
	var held []net.Conn
	accepted := make(chan struct{}, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := hanging.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // never answered
			mu.Unlock()
			accepted <- struct{}{}
		}
	}()
	t.Cleanup(func() {
		hanging.Close()
		<-done
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})

	for _, tc := range []struct {
		name, host string
		conns      chan struct{} // connections made, if observable
	}{
		{"refusing", refusingAddr, nil},
		{"hanging", hanging.Addr().String(), accepted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			a := &app{out: &out, errOut: &errOut, cacheDir: t.TempDir()}
			ref := tc.host + "/app:1"
			if got := a.pinImage(context.Background(), ref); got != ref {
				t.Errorf("pinImage = %q, want the reference unchanged", got)
			}
			if !strings.Contains(errOut.String(), "no answer from registry "+tc.host) || strings.Count(errOut.String(), "\n") != 1 {
				t.Errorf("first lookup: want one line saying the registry did not answer, got %q", errOut.String())
			}
			if !connected(tc.conns) {
				t.Errorf("first lookup made no connection")
			}
			drain(tc.conns)

			errOut.Reset()
			if got := a.pinImage(context.Background(), tc.host+"/other:2"); got != tc.host+"/other:2" {
				t.Errorf("pinImage = %q, want the reference unchanged", got)
			}
			if !strings.Contains(errOut.String(), "registry "+tc.host+" did not answer") || strings.Count(errOut.String(), "\n") != 1 {
				t.Errorf("second lookup: want one line saying it was skipped, got %q", errOut.String())
			}
			if tc.conns != nil && len(tc.conns) != 0 {
				t.Errorf("second lookup connected to the registry that did not answer")
			}

			// An old entry: asked again.
			silent := a.loadSilent()
			silent[tc.host] = time.Now().Add(-silentFor - time.Second)
			a.saveSilent(silent)
			errOut.Reset()
			a.pinImage(context.Background(), ref)
			if !strings.Contains(errOut.String(), "no answer from registry") {
				t.Errorf("after silentFor: want a new lookup, got %q", errOut.String())
			}
			if !connected(tc.conns) {
				t.Errorf("after silentFor: no connection made")
			}
			drain(tc.conns)
		})
	}

	// Answered: a registry that says "no such tag" is asked every time.
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}`)
	}))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	var errOut bytes.Buffer
	a := &app{out: io.Discard, errOut: &errOut, cacheDir: t.TempDir()}
	a.pinImage(context.Background(), host+"/app:1")
	if !strings.Contains(errOut.String(), "could not be pinned") {
		t.Errorf("answered with 404: %q", errOut.String())
	}
	if _, ok := a.loadSilent()[host]; ok {
		t.Errorf("a registry that answered was remembered as silent")
	}

	// Pinned already: no lookup, no warning.
	errOut.Reset()
	pinned := refusingAddr + "/app:1@sha256:0123456789012345678901234567890123456789012345678901234567890123"
	if got := a.pinImage(context.Background(), pinned); got != pinned || errOut.Len() != 0 {
		t.Errorf("pinned ref changed to %q (warning %q)", got, errOut.String())
	}
}

// connected waits (generously) for a connection the lookup made; true
// when connections are not observable (nil).
func connected(c chan struct{}) bool {
	if c == nil {
		return true
	}
	select {
	case <-c:
		return true
	case <-time.After(10 * time.Second):
		return false
	}
}

func drain(c chan struct{}) {
	for c != nil && len(c) > 0 {
		<-c
	}
}

// The cache is trusted only when nobody else could have written it: in a
// shared or world-writable dir, another user could make this one skip
// pinning for every registry.
func TestSilentCacheIgnoredWhenOthersCanWrite(t *testing.T) {
	for _, tc := range []struct {
		name              string
		dirMode, fileMode os.FileMode
		trusted           bool
	}{
		{"private", 0o700, 0o600, true},
		{"world-writable file", 0o700, 0o666, false},
		{"group-writable dir", 0o770, 0o600, false},
		{"world-writable dir", 0o777, 0o600, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cache")
			a := &app{out: io.Discard, errOut: io.Discard, cacheDir: dir}
			a.saveSilent(map[string]time.Time{"reg.example:5000": time.Now()})
			if err := os.Chmod(filepath.Join(dir, silentFile), tc.fileMode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tc.dirMode); err != nil {
				t.Fatal(err)
			}
			if _, ok := a.loadSilent()["reg.example:5000"]; ok != tc.trusted {
				t.Errorf("cache read = %v, want %v", ok, tc.trusted)
			}
		})
	}
	// A symlink in place of the file is not followed.
	dir := filepath.Join(t.TempDir(), "cache")
	a := &app{out: io.Discard, errOut: io.Discard, cacheDir: dir}
	a.saveSilent(map[string]time.Time{"reg.example:5000": time.Now()})
	other := filepath.Join(t.TempDir(), "planted.json")
	if err := os.Rename(filepath.Join(dir, silentFile), other); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(other, filepath.Join(dir, silentFile)); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.loadSilent()["reg.example:5000"]; ok {
		t.Error("a symlinked cache file was read")
	}
}

func TestParseMount(t *testing.T) {
	m, err := parseMount("type=bind,source=/srv/data,target=/data,readonly")
	if err != nil || m.GetType() != "bind" || m.GetSource() != "/srv/data" || m.GetTarget() != "/data" || !m.GetReadOnly() {
		t.Errorf("bind: %v %v", m, err)
	}
	m, err = parseMount("type=tmpfs,dst=/tmp")
	if err != nil || m.GetType() != "tmpfs" || m.GetTarget() != "/tmp" || m.GetReadOnly() {
		t.Errorf("tmpfs: %v %v", m, err)
	}
	for _, bad := range []string{"type=bind,source=/x", "type=bind,size=1,target=/x"} {
		if _, err := parseMount(bad); err == nil {
			t.Errorf("parseMount(%q): no error", bad)
		}
	}
}

func TestConvergence(t *testing.T) {
	mk := func(id string, state, desired shoalv1.TaskState, ver uint64) *shoalv1.Task {
		return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, DesiredState: desired, SpecVersion: ver,
			Status: &shoalv1.TaskStatus{State: state}}
	}
	run, want := shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_RUNNING
	repl := &shoalv1.Service{SpecVersion: 2, Spec: &shoalv1.ServiceSpec{Replicas: 2}}
	global := &shoalv1.Service{SpecVersion: 1, Spec: &shoalv1.ServiceSpec{Mode: shoalv1.ServiceMode_SERVICE_MODE_GLOBAL}}
	tests := []struct {
		name  string
		svc   *shoalv1.Service
		tasks []*shoalv1.Task
		done  bool
	}{
		{"replicated, both running", repl, []*shoalv1.Task{mk("a", run, want, 2), mk("b", run, want, 2)}, true},
		{"replicated, one assigned", repl, []*shoalv1.Task{mk("a", run, want, 2), mk("b", shoalv1.TaskState_TASK_STATE_ASSIGNED, want, 2)}, false},
		{"replicated, old spec", repl, []*shoalv1.Task{mk("a", run, want, 2), mk("b", run, want, 1)}, false},
		{"replicated, one still stopping", repl, []*shoalv1.Task{mk("a", run, want, 2), mk("b", run, want, 2),
			mk("c", run, shoalv1.TaskState_TASK_STATE_SHUTDOWN, 1)}, false},
		{"global, no task yet", global, nil, false},
		{"global, all running", global, []*shoalv1.Task{mk("a", run, want, 1), mk("b", run, want, 1)}, true},
	}
	for _, tt := range tests {
		m := map[string]*shoalv1.Task{}
		for _, x := range tt.tasks {
			m[x.GetMeta().GetId()] = x
		}
		if _, _, done := convergence(tt.svc, m); done != tt.done {
			t.Errorf("%s: done = %v, want %v", tt.name, done, tt.done)
		}
	}
}
