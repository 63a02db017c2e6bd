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
