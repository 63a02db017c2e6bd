package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// buildDemo compiles cmd/shoal-demo, static, into a temporary directory.
func buildDemo(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds shoal-demo")
	}
	out := filepath.Join(t.TempDir(), "shoal-demo")
	cmd := exec.Command("go", "build", "-o", out, "../shoal-demo")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

func opts(bin, format, out string) Options {
	return Options{
		Binary: bin, Name: "demo:latest", Entrypoint: BinaryPath, Cmd: []string{"serve"},
		Env: []string{"FOO=bar"}, Format: format, Out: out, Created: time.Unix(0, 0).UTC(),
	}
}

// untar extracts an OCI archive (regular files and dirs only) into dir.
func untar(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		} else if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dir) {
			t.Fatalf("entry %q escapes", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, b, 0o644)
			}
		default:
			t.Fatalf("unexpected entry %q type %c", h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// layerFiles reads the image's single layer: headers and contents by name.
func layerFiles(t *testing.T, img v1.Image) (map[string]*tar.Header, map[string][]byte, []string) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	hdrs, data := map[string]*tar.Header{}, map[string][]byte{}
	var order []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		hdrs[h.Name], data[h.Name] = h, b
		order = append(order, h.Name)
	}
	return hdrs, data, order
}

// checkImage verifies the config and the layer of a built image.
func checkImage(t *testing.T, img v1.Image, bin string, oci bool) {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Config
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH || c.WorkingDir != "/" ||
		!slices.Equal(c.Entrypoint, []string{"/shoal-demo"}) || !slices.Equal(c.Cmd, []string{"serve"}) ||
		!slices.Equal(c.Env, []string{"PATH=/", "FOO=bar"}) || !cfg.Created.Time.Equal(time.Unix(0, 0)) {
		t.Errorf("config = %+v / %+v", cfg, c)
	}
	want := types.DockerManifestSchema2
	if oci {
		want = types.OCIManifestSchema1
	}
	if mt, _ := img.MediaType(); mt != want {
		t.Errorf("manifest media type is not %s", want)
	}

	hdrs, data, order := layerFiles(t, img)
	if !slices.IsSorted(order) {
		t.Errorf("layer entries not sorted: %v", order)
	}
	binData, _ := os.ReadFile(bin)
	h := hdrs["shoal-demo"]
	if h == nil || h.Typeflag != tar.TypeReg || h.Mode != 0o755 || h.Uid != 0 || h.Gid != 0 ||
		!bytes.Equal(data["shoal-demo"], binData) {
		t.Fatalf("shoal-demo entry = %+v", h)
	}
	if h := hdrs["tmp/"]; h == nil || h.Typeflag != tar.TypeDir || h.Mode != 0o1777 {
		t.Errorf("tmp/ = %+v", h)
	}
	for _, d := range []string{"etc/", "proc/", "sys/", "dev/"} {
		if h := hdrs[d]; h == nil || h.Typeflag != tar.TypeDir {
			t.Errorf("%s = %+v", d, h)
		}
	}
	if h := hdrs["etc/hosts"]; h == nil || h.Size != 0 {
		t.Errorf("etc/hosts = %+v", h)
	}
	if p := string(data["etc/passwd"]); !strings.HasPrefix(p, "root:x:0:0:") || !strings.Contains(p, "\nnobody:x:65534:65534:") {
		t.Errorf("etc/passwd = %q", p)
	}
	if g := string(data["etc/group"]); !strings.HasPrefix(g, "root:x:0:") {
		t.Errorf("etc/group = %q", g)
	}
	for n, h := range hdrs {
		if !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s mtime %v", n, h.ModTime)
		}
	}

	// The binary from the layer runs.
	exe := filepath.Join(t.TempDir(), "shoal-demo")
	if err := os.WriteFile(exe, data["shoal-demo"], os.FileMode(h.Mode)); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(exe, "echo", "hello", "image").Output(); err != nil || string(out) != "hello image\n" {
		t.Errorf("running the layer's binary: %q, %v", out, err)
	}
}

func TestBuild(t *testing.T) {
	bin := buildDemo(t)
	dir := t.TempDir()

	t.Run("oci-archive", func(t *testing.T) {
		a, b := filepath.Join(dir, "a.oci.tar"), filepath.Join(dir, "b.oci.tar")
		da, err := Build(opts(bin, "oci-archive", a))
		if err != nil {
			t.Fatal(err)
		}
		db, err := Build(opts(bin, "oci-archive", b))
		if err != nil {
			t.Fatal(err)
		}
		if da != db {
			t.Errorf("two builds: digests %s and %s", da, db)
		}
		ba, _ := os.ReadFile(a)
		bb, _ := os.ReadFile(b)
		if !bytes.Equal(ba, bb) {
			t.Error("two builds: archives differ")
		}

		x := filepath.Join(dir, "extracted")
		untar(t, a, x)
		idx, err := layout.ImageIndexFromPath(x)
		if err != nil {
			t.Fatal(err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(im.Manifests) != 1 {
			t.Fatalf("index has %d manifests", len(im.Manifests))
		}
		desc := im.Manifests[0]
		if desc.Digest != da || desc.Annotations[refNameAnnotation] != "demo:latest" ||
			desc.Platform == nil || desc.Platform.OS != "linux" || desc.Platform.Architecture != runtime.GOARCH {
			t.Errorf("index entry = %+v, built %s", desc, da)
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate(img); err != nil {
			t.Fatal(err)
		}
		checkImage(t, img, bin, true)
	})

	t.Run("docker", func(t *testing.T) {
		out := filepath.Join(dir, "docker.tar")
		d, err := Build(opts(bin, "docker", out))
		if err != nil {
			t.Fatal(err)
		}
		tag, _ := name.NewTag("demo:latest")
		img, err := tarball.ImageFromPath(out, &tag)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := img.Digest(); got != d {
			t.Errorf("digest read back %s, built %s", got, d)
		}
		checkImage(t, img, bin, false)
	})

	t.Run("oci-layout", func(t *testing.T) {
		out := filepath.Join(dir, "layout")
		o := opts(bin, "oci-layout", out)
		d1, err := Build(o)
		if err != nil {
			t.Fatal(err)
		}
		o.Cmd = []string{"sleep", "inf"}
		d2, err := Build(o) // same name: replaces the first
		if err != nil {
			t.Fatal(err)
		}
		o.Name = "other"
		if _, err := Build(o); err != nil {
			t.Fatal(err)
		}
		if d1 == d2 {
			t.Error("a different Cmd gave the same digest")
		}
		idx, err := layout.ImageIndexFromPath(out)
		if err != nil {
			t.Fatal(err)
		}
		im, _ := idx.IndexManifest()
		var names []string
		for _, m := range im.Manifests {
			names = append(names, m.Annotations[refNameAnnotation]+"="+m.Digest.String())
		}
		want := []string{"demo:latest=" + d2.String(), "other:latest=" + d2.String()}
		if !slices.Equal(names, want) {
			t.Errorf("index = %v, want %v", names, want)
		}
		img, _ := idx.Image(d2)
		cfg, err := img.ConfigFile()
		if err != nil || !slices.Equal(cfg.Config.Cmd, []string{"sleep", "inf"}) {
			t.Errorf("config %+v, %v", cfg, err)
		}
	})

	t.Run("errors", func(t *testing.T) {
		bad := []func(*Options){
			func(o *Options) { o.Format = "zip" },
			func(o *Options) { o.Env = []string{"NOEQUALS"} },
			func(o *Options) { o.Name = "Bad Name" },
			func(o *Options) { o.Binary = filepath.Join(dir, "missing") },
			func(o *Options) { o.Out = filepath.Join(dir, "no", "such", "dir.tar") },
		}
		for i, f := range bad {
			o := opts(bin, "oci-archive", filepath.Join(dir, "err.tar"))
			f(&o)
			if _, err := Build(o); err == nil {
				t.Errorf("case %d: no error", i)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "err.tar")); !os.IsNotExist(err) {
			t.Errorf("failed build left an output: %v", err)
		}
	})
}

// validate reads the flattened filesystem of img (all layers, decompressed).
func validate(img v1.Image) error {
	rc := mutate.Extract(img)
	defer rc.Close()
	_, err := io.Copy(io.Discard, rc)
	return err
}

func TestImageName(t *testing.T) {
	for in, want := range map[string]string{
		"demo": "demo:latest", "demo:v1": "demo:v1", "localhost:5000/demo": "localhost:5000/demo:latest",
		"registry.example/a/b:x": "registry.example/a/b:x",
	} {
		if got, err := imageName(in); err != nil || got != want {
			t.Errorf("imageName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "UPPER", "a b", "demo@sha256:00"} {
		if got, err := imageName(in); err == nil {
			t.Errorf("imageName(%q) = %q, want an error", in, got)
		}
	}
}

func TestLayerTarDeterministic(t *testing.T) {
	a, err := LayerTar([]byte("binary"), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := LayerTar([]byte("binary"), time.Unix(0, 0))
	c, _ := LayerTar([]byte("binary"), time.Unix(1, 0))
	if !bytes.Equal(a, b) || bytes.Equal(a, c) {
		t.Error("LayerTar is not a function of its inputs")
	}
}

func TestBinaryArch(t *testing.T) {
	var warn bytes.Buffer
	if got := binaryArch([]byte("#!/bin/sh\n"), &warn); got != runtime.GOARCH || !strings.Contains(warn.String(), "not ELF") {
		t.Errorf("script: %q, warning %q", got, warn.String())
	}
	self, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	b, _ := os.ReadFile(self)
	if got := binaryArch(b, io.Discard); got != runtime.GOARCH {
		t.Errorf("test binary: arch %q, want %q", got, runtime.GOARCH)
	}
}

// makeTree writes a small root: modes with setuid and sticky bits, a
// relative and an absolute symlink, two names of one file, a FIFO, and (as
// root) a device node and files owned by another user.
func makeTree(t *testing.T) (dir string, asRoot bool) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "root")
	asRoot = os.Geteuid() == 0
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin", "etc", "srv/data", "tmp", "dev"} {
		must(os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	must(os.WriteFile(filepath.Join(dir, "bin/tool"), []byte("#!/bin/sh\necho tool\n"), 0o755))
	must(os.Chmod(filepath.Join(dir, "bin/tool"), 0o755|os.ModeSetuid))
	must(os.Chmod(filepath.Join(dir, "tmp"), 0o777|os.ModeSticky))
	must(os.Chmod(filepath.Join(dir, "srv/data"), 0o750))
	must(os.WriteFile(filepath.Join(dir, "etc/conf"), []byte("a=1\n"), 0o640))
	must(os.Link(filepath.Join(dir, "bin/tool"), filepath.Join(dir, "bin/tool2")))
	must(os.Symlink("tool", filepath.Join(dir, "bin/rel")))
	must(os.Symlink("/etc/conf", filepath.Join(dir, "bin/abs")))
	must(unix.Mkfifo(filepath.Join(dir, "srv/fifo"), 0o644))
	if asRoot {
		must(unix.Mknod(filepath.Join(dir, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		must(os.Lchown(filepath.Join(dir, "srv/data"), 1000, 1001))
		must(os.Lchown(filepath.Join(dir, "bin/abs"), 7, 8))
	}
	return dir, asRoot
}

func rootfsOpts(dir, out string) Options {
	return Options{
		Rootfs: dir, Name: "deb:1", Cmd: []string{"nginx", "-g", "daemon off;"},
		Env: []string{"FOO=bar"}, StopSignal: "quit", User: "www-data", WorkDir: "/srv",
		Healthcheck: []string{"CMD-SHELL", "curl -f localhost"}, HealthInterval: 5 * time.Second, HealthRetries: 2,
		Format: "oci-archive", Out: out, Created: time.Unix(0, 0).UTC(),
	}
}

func TestRootfs(t *testing.T) {
	dir, asRoot := makeTree(t)
	out := filepath.Join(t.TempDir(), "deb.oci.tar")
	var warn bytes.Buffer
	o := rootfsOpts(dir, out)
	o.Warn = &warn
	d1, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(warn.String(), "srv/fifo") || asRoot != strings.Contains(warn.String(), "dev/null") {
		t.Errorf("warning %q does not name the left-out special files", warn.String())
	}

	x := filepath.Join(t.TempDir(), "x")
	untar(t, out, x)
	idx, err := layout.ImageIndexFromPath(x)
	if err != nil {
		t.Fatal(err)
	}
	img, err := idx.Image(d1)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate(img); err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Config
	if c.StopSignal != "SIGQUIT" || c.User != "www-data" || c.WorkingDir != "/srv" || c.Entrypoint != nil ||
		!slices.Equal(c.Cmd, []string{"nginx", "-g", "daemon off;"}) ||
		!slices.Equal(c.Env, []string{DefaultPath, "FOO=bar"}) || cfg.Architecture != runtime.GOARCH {
		t.Errorf("config = %+v", c)
	}
	if h := c.Healthcheck; h == nil || !slices.Equal(h.Test, []string{"CMD-SHELL", "curl -f localhost"}) || h.Interval != 5*time.Second || h.Retries != 2 {
		t.Errorf("HEALTHCHECK = %+v", c.Healthcheck)
	}

	hdrs, data, _ := layerFiles(t, img)
	uid, gid := os.Geteuid(), os.Getegid()
	type want struct {
		typ      byte
		mode     int64
		link     string
		uid, gid int
	}
	wants := map[string]want{
		"bin/":      {tar.TypeDir, 0o755, "", uid, gid},
		"bin/tool":  {tar.TypeReg, 0o4755, "", uid, gid},
		"bin/tool2": {tar.TypeLink, 0o4755, "bin/tool", uid, gid},
		"bin/rel":   {tar.TypeSymlink, 0o777, "tool", uid, gid},
		"bin/abs":   {tar.TypeSymlink, 0o777, "/etc/conf", uid, gid},
		"etc/conf":  {tar.TypeReg, 0o640, "", uid, gid},
		"srv/data/": {tar.TypeDir, 0o750, "", uid, gid},
		"tmp/":      {tar.TypeDir, 0o1777, "", uid, gid},
		"dev/":      {tar.TypeDir, 0o755, "", uid, gid},
	}
	if asRoot {
		wants["srv/data/"] = want{tar.TypeDir, 0o750, "", 1000, 1001}
		wants["bin/abs"] = want{tar.TypeSymlink, 0o777, "/etc/conf", 7, 8}
	}
	for n, w := range wants {
		h := hdrs[n]
		if h == nil {
			t.Errorf("%s: missing", n)
			continue
		}
		if h.Typeflag != w.typ || h.Mode != w.mode || h.Linkname != w.link || h.Uid != w.uid || h.Gid != w.gid ||
			h.Uname != "" || h.Gname != "" || !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s = type %c mode %o link %q owner %d:%d (%q:%q) mtime %v; want %+v",
				n, h.Typeflag, h.Mode, h.Linkname, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime, w)
		}
	}
	if string(data["bin/tool"]) != "#!/bin/sh\necho tool\n" || len(data["bin/tool2"]) != 0 {
		t.Errorf("file contents: tool %q, tool2 %q", data["bin/tool"], data["bin/tool2"])
	}
	for n := range hdrs {
		if n == "srv/fifo" || n == "dev/null" || strings.HasPrefix(n, "/") || strings.HasPrefix(n, "./") {
			t.Errorf("unexpected entry %q", n)
		}
	}

	// Deterministic: the tree's mtimes do not matter, its contents do.
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "etc/conf"), future, future); err != nil {
		t.Fatal(err)
	}
	d2, err := Build(o)
	if err != nil || d2 != d1 {
		t.Errorf("rebuild after touching a file: %s, %v; first %s", d2, err, d1)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc/conf"), []byte("a=2\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if d3, err := Build(o); err != nil || d3 == d1 {
		t.Errorf("a changed file gave digest %s (%v), same as before", d3, err)
	}
}

func TestRootfsErrors(t *testing.T) {
	dir, _ := makeTree(t)
	out := filepath.Join(t.TempDir(), "err.tar")
	file := filepath.Join(dir, "etc/conf")
	for what, f := range map[string]func(*Options){
		"unknown stop signal":  func(o *Options) { o.StopSignal = "SIGNOPE" },
		"numeric stop signal":  func(o *Options) { o.StopSignal = "15" },
		"user with a space":    func(o *Options) { o.User = "www data" },
		"user with two colons": func(o *Options) { o.User = "a:b:c" },
		"relative workdir":     func(o *Options) { o.WorkDir = "srv" },
		"unclean workdir":      func(o *Options) { o.WorkDir = "/srv/../etc" },
		"rootfs is a file":     func(o *Options) { o.Rootfs = file },
		"rootfs missing":       func(o *Options) { o.Rootfs = filepath.Join(dir, "nope") },
		"binary and rootfs":    func(o *Options) { o.Binary = file },
	} {
		o := rootfsOpts(dir, out)
		f(&o)
		if _, err := Build(o); err == nil {
			t.Errorf("%s: no error", what)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "etc/.wh.conf"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(rootfsOpts(dir, out)); err == nil || !strings.Contains(err.Error(), "etc/.wh.conf") {
		t.Errorf("a .wh. name: %v, want an error naming it", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("failed builds left an output: %v", err)
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]string{"SIGQUIT": "SIGQUIT", "quit": "SIGQUIT", "SigTerm": "SIGTERM", "WINCH": "SIGWINCH"} {
		if got, err := ParseSignal(in); err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "SIG", "NOPE", "15", "SIGQUIT "} {
		if got, err := ParseSignal(in); err == nil {
			t.Errorf("ParseSignal(%q) = %q, want an error", in, got)
		}
	}
}

func TestParseHealthcheck(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
		err  bool
	}{
		{"NONE", []string{"NONE"}, false},
		{`["/shoal-demo", "fetch", "http://127.0.0.1:8080/health"]`, []string{"CMD", "/shoal-demo", "fetch", "http://127.0.0.1:8080/health"}, false},
		{"curl -f localhost || exit 1", []string{"CMD-SHELL", "curl -f localhost || exit 1"}, false},
		{"[]", nil, true},
		{`["x",`, nil, true},
		{" ", nil, true},
	} {
		got, err := ParseHealthcheck(c.in)
		if (err != nil) != c.err || !slices.Equal(got, c.want) {
			t.Errorf("%q: %q %v, want %q (error %v)", c.in, got, err, c.want, c.err)
		}
	}
}
