package runtime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestCapabilitiesSet(t *testing.T) {
	cases := []struct {
		add, drop []string
		has, not  []string
	}{
		{nil, nil, []string{"CAP_CHOWN", "CAP_KILL"}, []string{"CAP_SYS_ADMIN"}},
		{[]string{"net_admin"}, []string{"CAP_CHOWN"}, []string{"CAP_NET_ADMIN"}, []string{"CAP_CHOWN"}},
		{[]string{"KILL"}, []string{"ALL"}, []string{"CAP_KILL"}, []string{"CAP_CHOWN"}},
	}
	for _, c := range cases {
		got, err := capabilities(c.add, c.drop)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range c.has {
			if !slices.Contains(got, h) {
				t.Errorf("%v/%v: missing %s in %v", c.add, c.drop, h, got)
			}
		}
		for _, n := range c.not {
			if slices.Contains(got, n) {
				t.Errorf("%v/%v: unexpected %s", c.add, c.drop, n)
			}
		}
	}
	if _, err := capabilities([]string{"CAP_BOGUS"}, nil); err == nil {
		t.Error("unknown capability accepted")
	}
	if got, _ := capabilities(nil, nil); len(got) != 14 {
		t.Errorf("default set has %d caps, want Docker's 14", len(got))
	}
}

func TestLogRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	l, err := openLogFile(path, LogOptions{MaxBytes: 300, MaxFiles: 3})
	if err != nil {
		t.Fatal(err)
	}
	in := ""
	for i := range 40 {
		in += fmt.Sprintf("line %02d\n", i)
	}
	if err := l.copyLines("stdout", strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	var all []LogRecord
	for _, p := range []string{path + ".2", path + ".1", path} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 300 {
			t.Errorf("%s is %d bytes, over the limit", p, fi.Size())
		}
		recs, err := ReadLog(p)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, recs...)
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Errorf("more files than MaxFiles: %v", err)
	}
	if len(all) == 0 || all[len(all)-1].Log != "line 39\n" {
		t.Errorf("last record %+v", all[len(all)-1])
	}
	// Records are in order across the kept files.
	for i := 1; i < len(all); i++ {
		if all[i].Log < all[i-1].Log {
			t.Errorf("out of order: %q after %q", all[i].Log, all[i-1].Log)
		}
	}
}

func TestLongLineSplit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	l, _ := openLogFile(path, LogOptions{})
	long := strings.Repeat("a", maxLogLine*2+10) + "\n"
	if err := l.copyLines("stderr", strings.NewReader(long+"tail")); err != nil {
		t.Fatal(err)
	}
	l.Close()
	recs, _ := ReadLog(path)
	var joined string
	for _, r := range recs {
		joined += r.Log
	}
	if joined != long+"tail" || len(recs) != 4 {
		t.Errorf("got %d records, joined ok = %v", len(recs), joined == long+"tail")
	}
}

func TestSpecValidate(t *testing.T) {
	ok := Spec{ID: "a", Rootfs: "/r", Args: []string{"x"}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []Spec{
		{ID: "", Rootfs: "/r", Args: []string{"x"}},
		{ID: "a/b", Rootfs: "/r", Args: []string{"x"}},
		{ID: "a", Rootfs: "r", Args: []string{"x"}},
		{ID: "a", Rootfs: "/r"},
		{ID: "a", Rootfs: "/r", Args: []string{"x"}, Mounts: []Mount{{Source: "rel", Destination: "/d"}}},
		{ID: "a", Rootfs: "/r", Args: []string{"x"}, Resources: Resources{MemoryBytes: -1}},
	}
	for _, s := range bad {
		if err := s.Validate(); err == nil {
			t.Errorf("accepted %+v", s)
		}
	}
}

func TestResolveUser(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("app:x:1000:1000::/home/app:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("app:x:1000:\nstaff:x:50:app\n"), 0o644)
	cases := []struct {
		spec     string
		uid, gid int
	}{{"", 0, 0}, {"app", 1000, 1000}, {"123:456", 123, 456}, {"app:staff", 1000, 50}, {"77", 77, 0}}
	for _, c := range cases {
		u, err := resolveUser(root, c.spec)
		if err != nil {
			t.Fatalf("%q: %v", c.spec, err)
		}
		if u.Uid != c.uid || u.Gid != c.gid {
			t.Errorf("%q: %d:%d, want %d:%d", c.spec, u.Uid, u.Gid, c.uid, c.gid)
		}
	}
	if _, err := resolveUser(root, "ghost"); err == nil {
		t.Error("unknown user accepted")
	}
}

func TestFake(t *testing.T) {
	f := NewFake()
	ctx := context.Background()
	var rt Runtime = f
	spec := Spec{ID: "a", Rootfs: "/r", Args: []string{"x"}}
	if err := rt.Start(ctx, spec, "/l"); err != nil {
		t.Fatal(err)
	}
	if st, _ := rt.State(ctx, "a"); st.Status != StatusRunning {
		t.Errorf("%+v", st)
	}
	f.Exit("a", 3, false)
	if st, _ := rt.State(ctx, "a"); st.Status != StatusExited || st.Exit.Code != 3 {
		t.Errorf("%+v", st)
	}
	spec.ID = "b"
	rt.Start(ctx, spec, "/l")
	rt.Stop(ctx, "b", syscall.SIGTERM, time.Second)
	if st, _ := rt.State(ctx, "b"); st.Exit == nil || st.Exit.Signal != int(syscall.SIGTERM) {
		t.Errorf("%+v", st)
	}
	if l, _ := rt.List(ctx); len(l) != 2 {
		t.Errorf("list %v", l)
	}
	rt.Remove(ctx, "a")
	if _, err := rt.State(ctx, "a"); err == nil {
		t.Error("removed task still there")
	}
}

func TestValidID(t *testing.T) {
	long := strings.Repeat("a", 128)
	for id, want := range map[string]bool{
		"a": true, "A-1_b.c": true, "9": true, long: true,
		"": false, "-a": false, ".a": false, "_a": false, "a/b": false, "a b": false,
		long + "a": false, "ä": false, "..": false,
	} {
		if got := validID(id); got != want {
			t.Errorf("validID(%q) = %v, want %v", id, got, want)
		}
	}
}
