package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type tarEntry struct {
	name, link string
	typ        byte
	mode       int64
	body       string
	uid, gid   int
	major      int64
	minor      int64
	xattrs     map[string]string
	mtime      time.Time
}

func buildTar(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		mt := e.mtime
		if mt.IsZero() {
			mt = time.Unix(1_600_000_000, 0)
		}
		hdr := &tar.Header{
			Name: e.name, Linkname: e.link, Typeflag: typ, Mode: mode,
			Uid: e.uid, Gid: e.gid, Devmajor: e.major, Devminor: e.minor,
			ModTime: mt, Format: tar.FormatPAX,
		}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		for k, v := range e.xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("write header %q: %v", e.name, err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// untarInto unpacks entries into <tmp>/root and returns (tmp, root, err);
// tmp/outside is a sibling that escapes would hit.
func untarInto(t *testing.T, entries []tarEntry) (string, string, error) {
	t.Helper()
	base := t.TempDir()
	root := filepath.Join(base, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(base, "outside"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := untar(context.Background(), root, bytes.NewReader(buildTar(t, entries)), testLogger(t), Limits{})
	return base, root, err
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mknod, chown, trusted.* xattrs)")
	}
}

func TestUntarRefusesEscapes(t *testing.T) {
	tests := []struct {
		name    string
		entries []tarEntry
	}{
		{"dotdot file", []tarEntry{{name: "../outside/evil", body: "x"}}},
		{"dotdot nested", []tarEntry{{name: "a/../../outside/evil", body: "x"}}},
		{"symlink dir then file through it", []tarEntry{
			{name: "lnk", typ: tar.TypeSymlink, link: "../outside"},
			{name: "lnk/evil", body: "x"},
		}},
		{"absolute symlink dir then file through it", []tarEntry{
			{name: "lnk", typ: tar.TypeSymlink, link: "/tmp"},
			{name: "lnk/evil", body: "x"},
		}},
		{"symlink dir then mkdir through it", []tarEntry{
			{name: "lnk", typ: tar.TypeSymlink, link: "../outside"},
			{name: "lnk/sub/", typ: tar.TypeDir},
		}},
		{"hardlink escape", []tarEntry{{name: "hl", typ: tar.TypeLink, link: "../outside/target"}}},
		{"hardlink through symlink", []tarEntry{
			{name: "lnk", typ: tar.TypeSymlink, link: "../outside"},
			{name: "hl", typ: tar.TypeLink, link: "lnk/target"},
		}},
		{"whiteout through symlink", []tarEntry{
			{name: "lnk", typ: tar.TypeSymlink, link: "../outside"},
			{name: "lnk/.wh.target", body: ""},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base, _, err := untarInto(t, append([]tarEntry{}, tc.entries...))
			// Put a file outside so hardlink/whiteout escapes have a target.
			if err == nil {
				t.Fatalf("untar succeeded, want refusal")
			}
			if !errors.Is(err, errUnsafe) {
				t.Fatalf("err = %v, want errUnsafe", err)
			}
			ents, _ := os.ReadDir(filepath.Join(base, "outside"))
			if len(ents) != 0 {
				t.Fatalf("something was written outside the root: %v", ents)
			}
			if _, err := os.Lstat("/tmp/evil"); err == nil {
				t.Fatalf("/tmp/evil written")
			}
		})
	}
}

func TestUntarHardlinkEscapeWithExistingTarget(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	os.Mkdir(root, 0o755)
	os.WriteFile(filepath.Join(base, "secret"), []byte("s"), 0o600)
	_, err := untar(context.Background(), root, bytes.NewReader(buildTar(t, []tarEntry{
		{name: "hl", typ: tar.TypeLink, link: "../secret"},
	})), testLogger(t), Limits{})
	if !errors.Is(err, errUnsafe) {
		t.Fatalf("err = %v, want errUnsafe", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "hl")); err == nil {
		t.Fatal("hardlink to outside file created")
	}
}

func TestUntarAbsolutePathsStayInside(t *testing.T) {
	_, root, err := untarInto(t, []tarEntry{
		{name: "/etc/shoal-test-abs", body: "inside"},
		{name: "target", body: "t"},
		{name: "/hl", typ: tar.TypeLink, link: "/target"},
		{name: "abslink", typ: tar.TypeSymlink, link: "/etc/passwd"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat("/etc/shoal-test-abs"); err == nil {
		t.Fatal("absolute path written to the host")
	}
	b, err := os.ReadFile(filepath.Join(root, "etc/shoal-test-abs"))
	if err != nil || string(b) != "inside" {
		t.Fatalf("file inside root: %q %v", b, err)
	}
	var a, h unix.Stat_t
	unix.Lstat(filepath.Join(root, "target"), &a)
	unix.Lstat(filepath.Join(root, "hl"), &h)
	if a.Ino != h.Ino {
		t.Fatal("absolute hardlink target not resolved inside the root")
	}
	if l, _ := os.Readlink(filepath.Join(root, "abslink")); l != "/etc/passwd" {
		t.Fatalf("symlink target = %q, stored verbatim expected", l)
	}
}

func TestUntarWhiteoutsAndOpaque(t *testing.T) {
	requireRoot(t)
	_, root, err := untarInto(t, []tarEntry{
		{name: "etc/", typ: tar.TypeDir},
		{name: "etc/.wh.removed", body: ""},
		{name: "var/lib/", typ: tar.TypeDir},
		{name: "var/lib/.wh..wh..opq", body: ""},
		{name: "var/lib/new", body: "n"},
		{name: "x/.wh..wh.plnk", typ: tar.TypeDir},
	})
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "etc/removed"), &st); err != nil {
		t.Fatalf("whiteout not created: %v", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Fatalf("whiteout mode %o rdev %d, want char 0/0", st.Mode, st.Rdev)
	}
	if _, err := os.Lstat(filepath.Join(root, "etc/.wh.removed")); err == nil {
		t.Fatal(".wh. file itself was written")
	}
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(filepath.Join(root, "var/lib"), overlayOpaqueXattr, buf)
	if err != nil || string(buf[:n]) != "y" {
		t.Fatalf("opaque xattr = %q, %v", buf[:n], err)
	}
	if _, err := os.Lstat(filepath.Join(root, "var/lib/.wh..wh..opq")); err == nil {
		t.Fatal("opaque marker file itself was written")
	}
	if _, err := os.Lstat(filepath.Join(root, "x/.wh..wh.plnk")); err == nil {
		t.Fatal("aufs metadata entry was written")
	}
}

func TestUntarKeepsMetadata(t *testing.T) {
	requireRoot(t)
	mtime := time.Unix(1_500_000_000, 0)
	dirTime := time.Unix(1_400_000_000, 0)
	_, root, err := untarInto(t, []tarEntry{
		// Contents before their directory: the dir entry comes last.
		{name: "opt/app/bin", body: "#!/bin/sh\n", mode: 0o4755, uid: 1000, gid: 1001, mtime: mtime},
		{name: "opt/app/data", body: "d", mode: 0o640, uid: 33, gid: 33,
			xattrs: map[string]string{"user.shoal": "v", "trusted.overlay.redirect": "/etc"}},
		{name: "opt/app/", typ: tar.TypeDir, mode: 0o2750, uid: 5, gid: 6, mtime: dirTime},
		{name: "opt/app/link", typ: tar.TypeSymlink, link: "bin", uid: 7, gid: 8},
		{name: "opt/app/hard", typ: tar.TypeLink, link: "opt/app/bin"},
		{name: "run/fifo", typ: tar.TypeFifo, mode: 0o600},
		{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
	})
	if err != nil {
		t.Fatal(err)
	}
	stat := func(p string) unix.Stat_t {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
			t.Fatalf("lstat %s: %v", p, err)
		}
		return st
	}
	bin := stat("opt/app/bin")
	if bin.Mode&0o7777 != 0o4755 || bin.Uid != 1000 || bin.Gid != 1001 {
		t.Errorf("bin mode %o uid %d gid %d", bin.Mode&0o7777, bin.Uid, bin.Gid)
	}
	if bin.Mtim.Sec != mtime.Unix() {
		t.Errorf("bin mtime %d, want %d", bin.Mtim.Sec, mtime.Unix())
	}
	if st := stat("opt/app"); st.Mode&0o7777 != 0o2750 || st.Uid != 5 || st.Gid != 6 || st.Mtim.Sec != dirTime.Unix() {
		t.Errorf("dir mode %o uid %d gid %d mtime %d", st.Mode&0o7777, st.Uid, st.Gid, st.Mtim.Sec)
	}
	if st := stat("opt/app/link"); st.Mode&unix.S_IFMT != unix.S_IFLNK || st.Uid != 7 || st.Gid != 8 {
		t.Errorf("symlink mode %o uid %d gid %d (lchown)", st.Mode, st.Uid, st.Gid)
	}
	if st := stat("opt/app/hard"); st.Ino != bin.Ino {
		t.Errorf("hardlink is not the same inode")
	}
	// Device nodes are refused: TestUntarRefusesDevices.
	if st := stat("run/fifo"); st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("fifo mode %o", st.Mode)
	}
	if st := stat("tmp"); st.Mode&0o7777 != 0o1777 {
		t.Errorf("sticky dir mode %o", st.Mode&0o7777)
	}
	buf := make([]byte, 64)
	if n, err := unix.Lgetxattr(filepath.Join(root, "opt/app/data"), "user.shoal", buf); err != nil || string(buf[:n]) != "v" {
		t.Logf("user xattr not kept (filesystem may not support it): %q %v", buf[:n], err)
	}
	if _, err := unix.Lgetxattr(filepath.Join(root, "opt/app/data"), "trusted.overlay.redirect", buf); err == nil {
		t.Error("trusted.overlay.* xattr from the archive was applied")
	}
}

func TestUntarLaterEntryReplacesEarlier(t *testing.T) {
	_, root, err := untarInto(t, []tarEntry{
		{name: "f", body: "old"},
		{name: "f", body: "new"},
		{name: "d/x", body: "x"},
		{name: "d", typ: tar.TypeSymlink, link: "elsewhere"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "f")); string(b) != "new" {
		t.Fatalf("f = %q", b)
	}
	if l, err := os.Readlink(filepath.Join(root, "d")); err != nil || l != "elsewhere" {
		t.Fatalf("d = %q %v", l, err)
	}
}
