package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "images"), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tarLayer(t *testing.T, entries []tarEntry) v1.Layer {
	t.Helper()
	b := buildTar(t, entries)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

var (
	baseEntries = []tarEntry{{name: "bin/", typ: tar.TypeDir}, {name: "bin/app", body: "app v1", mode: 0o755}}
	topEntries  = []tarEntry{{name: "etc/", typ: tar.TypeDir}, {name: "etc/conf", body: "conf"}}
)

func testImage(t *testing.T, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint = []string{"/bin/app"}
	cf.Config.Cmd = []string{"serve"}
	cf.Config.Env = []string{"PATH=/bin"}
	cf.Config.WorkingDir = "/srv"
	cf.Config.User = "1000:1000"
	cf.Config.Healthcheck = &v1.HealthConfig{Test: []string{"CMD-SHELL", "/bin/app check"}, Interval: 5 * time.Second, Retries: 2}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func checkImage(t *testing.T, got Image, want v1.Image) {
	t.Helper()
	d, _ := want.Digest()
	if got.Config.Entrypoint[0] != "/bin/app" || got.Config.WorkingDir != "/srv" || got.Config.User != "1000:1000" {
		t.Errorf("config = %+v", got.Config)
	}
	if h := got.Config.Healthcheck; h == nil || !slices.Equal(h.Test, []string{"CMD-SHELL", "/bin/app check"}) || h.Interval != 5*time.Second || h.Retries != 2 {
		t.Errorf("the image's HEALTHCHECK = %+v", got.Config.Healthcheck)
	}
	ls, _ := want.Layers()
	if len(got.Layers) != len(ls) {
		t.Fatalf("%d layers, want %d", len(got.Layers), len(ls))
	}
	b, err := os.ReadFile(filepath.Join(got.Layers[0], "bin/app"))
	if err != nil || string(b) != "app v1" {
		t.Errorf("bottom layer bin/app = %q, %v", b, err)
	}
	_ = d
}

func writeOCILayout(t *testing.T, dir string, img v1.Image, ref string) {
	t.Helper()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{annotationRefName: ref})); err != nil {
		t.Fatal(err)
	}
}

// tarDir writes dir as a tar file (an OCI archive).
func tarDir(t *testing.T, dir, out string) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadFormats(t *testing.T) {
	img := testImage(t, tarLayer(t, baseEntries), tarLayer(t, topEntries))
	digest, _ := img.Digest()
	cfgName, _ := img.ConfigName()

	tmp := t.TempDir()
	layoutDir := filepath.Join(tmp, "layout")
	writeOCILayout(t, layoutDir, img, "example.com/app:1")
	ociArchive := filepath.Join(tmp, "oci.tar")
	tarDir(t, layoutDir, ociArchive)
	dockerArchive := filepath.Join(tmp, "docker.tar")
	tag, _ := name.NewTag("app:2")
	if err := tarball.WriteToFile(dockerArchive, tag, img); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, path, ref string
		sameDigest      bool
	}{
		{"oci layout dir", layoutDir, "example.com/app:1", true},
		{"oci archive", ociArchive, "example.com/app:1", true},
		{"docker save", dockerArchive, "app:2", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			imgs, err := s.Load(context.Background(), tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if len(imgs) != 1 {
				t.Fatalf("%d images", len(imgs))
			}
			checkImage(t, imgs[0], img)
			if tc.sameDigest && imgs[0].Digest != digest.String() {
				t.Errorf("digest %s, want %s", imgs[0].Digest, digest)
			}
			if imgs[0].ID != cfgName.String() {
				t.Errorf("id %s, want %s", imgs[0].ID, cfgName)
			}
			got, ok := s.Get(tc.ref)
			if !ok || got.Digest != imgs[0].Digest {
				t.Fatalf("Get(%q) = %v %v", tc.ref, got.Digest, ok)
			}
			if _, ok := s.Get(cfgName.Hex[:12]); !ok {
				t.Error("Get by ID prefix failed")
			}
			if _, ok := s.Get(imgs[0].Digest); !ok {
				t.Error("Get by digest failed")
			}
			// Reopen: the index survives.
			s2, err := Open(s.Dir(), testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			if l := s2.List(); len(l) != 1 || l[0].Digest != imgs[0].Digest {
				t.Fatalf("after reopen: %+v", l)
			}
		})
	}
}

func TestLoadTruncatedArchiveLeavesStoreUnchanged(t *testing.T) {
	s := openStore(t)
	tmp := t.TempDir()
	first := filepath.Join(tmp, "first.tar")
	tag, _ := name.NewTag("first:1")
	if err := tarball.WriteToFile(first, tag, testImage(t, tarLayer(t, baseEntries))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	before := s.List()

	big := tarLayer(t, []tarEntry{{name: "big", body: strings.Repeat("x", 64<<10)}})
	full := filepath.Join(tmp, "full.tar")
	tag2, _ := name.NewTag("second:1")
	if err := tarball.WriteToFile(full, tag2, testImage(t, big)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(full)
	for _, cut := range []int{len(b) / 2, len(b) - 1000, 100} {
		trunc := filepath.Join(tmp, fmt.Sprintf("trunc-%d.tar", cut))
		os.WriteFile(trunc, b[:cut], 0o644)
		_, err := s.Load(context.Background(), trunc)
		if err == nil {
			t.Fatalf("cut %d: load of truncated archive succeeded", cut)
		}
		if !errors.Is(err, ErrBadArchive) || !strings.Contains(err.Error(), "truncated") {
			t.Errorf("cut %d: unclear error: %v", cut, err)
		}
		t.Logf("cut %d: %v", cut, err)
	}
	garbage := filepath.Join(tmp, "garbage")
	os.WriteFile(garbage, []byte("definitely not a tar"), 0o644)
	if _, err := s.Load(context.Background(), garbage); !errors.Is(err, ErrBadArchive) {
		t.Errorf("garbage: %v", err)
	}
	after := s.List()
	if len(after) != len(before) || after[0].Digest != before[0].Digest {
		t.Fatalf("List changed: %+v -> %+v", before, after)
	}
	ents, _ := os.ReadDir(filepath.Join(s.Dir(), layersDir))
	if len(ents) != 1 {
		t.Fatalf("%d layers on disk, want 1", len(ents))
	}
}

// A layer whose content does not match its diff id (a corrupt blob inside
// an otherwise well-formed layout) is refused and not published.
func TestLoadCorruptLayerBlob(t *testing.T) {
	s := openStore(t)
	img := testImage(t, tarLayer(t, baseEntries))
	dir := filepath.Join(t.TempDir(), "layout")
	writeOCILayout(t, dir, img, "example.com/bad:1")
	ls, _ := img.Layers()
	d, _ := ls[0].Digest()
	blob := filepath.Join(dir, "blobs", "sha256", d.Hex)
	b, _ := os.ReadFile(blob)
	b[len(b)/2] ^= 0xff
	os.WriteFile(blob, b, 0o644)
	if _, err := s.Load(context.Background(), dir); err == nil {
		t.Fatal("load of corrupt layer succeeded")
	} else {
		t.Log(err)
	}
	if len(s.List()) != 0 {
		t.Fatal("image recorded")
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Dir(), layersDir)); len(ents) != 0 {
		t.Fatalf("layers left: %v", ents)
	}
}

func startRegistry(t *testing.T, user, pass string) string {
	t.Helper()
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if user != "" {
		inner := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u, p, ok := r.BasicAuth()
			if !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return
			}
			inner.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewServer(h) // listens on 127.0.0.1
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u.Host
}

func push(t *testing.T, ref string, img v1.Image, opts ...remote.Option) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, opts...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

func TestPullUnpacksSharedLayerOnce(t *testing.T) {
	host := startRegistry(t, "", "")
	base := tarLayer(t, baseEntries)
	imgA := testImage(t, base, tarLayer(t, topEntries))
	imgB := testImage(t, base, tarLayer(t, []tarEntry{{name: "b", body: "b"}}))
	push(t, host+"/app:a", imgA)
	push(t, host+"/app:b", imgB)

	s := openStore(t)
	ctx := context.Background()
	a, err := s.Pull(ctx, host+"/app:a", PullOptions{AuthConfigPath: filepath.Join(t.TempDir(), "none.json")})
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, a, imgA)
	wantDigest, _ := imgA.Digest()
	if a.Digest != wantDigest.String() {
		t.Errorf("digest %s, want %s", a.Digest, wantDigest)
	}
	baseDir := a.Layers[0]
	before, err := os.Stat(baseDir)
	if err != nil {
		t.Fatal(err)
	}
	// Mark the unpacked base layer: a re-unpack would lose the marker.
	marker := filepath.Join(baseDir, ".shoal-test-marker")
	os.WriteFile(marker, nil, 0o600)

	b, err := s.Pull(ctx, host+"/app:b", PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b.Layers[0] != baseDir {
		t.Fatalf("shared layer in a different dir: %s vs %s", b.Layers[0], baseDir)
	}
	after, _ := os.Stat(baseDir)
	if _, err := os.Stat(marker); err != nil || !os.SameFile(before, after) {
		t.Fatal("shared layer was unpacked again")
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Dir(), layersDir)); len(ents) != 3 {
		t.Fatalf("%d layer dirs, want 3", len(ents))
	}

	// Resolve gives the registry's manifest digest.
	d, err := s.Resolve(ctx, host+"/app:a", PullOptions{})
	if err != nil || d != a.Digest {
		t.Fatalf("Resolve = %s, %v; want %s", d, err, a.Digest)
	}

	// lowerdir order is top first.
	lower := s.LowerDirs(a)
	if lower[0] != a.Layers[1] || lower[1] != a.Layers[0] {
		t.Fatalf("LowerDirs = %v", lower)
	}
	if _, err := s.Pull(ctx, host+"/app@"+a.Digest, PullOptions{}); err != nil {
		t.Fatalf("pull by digest: %v", err)
	}
	if got, ok := s.Get(host + "/app@" + a.Digest); !ok || got.Digest != a.Digest {
		t.Fatal("Get by name@digest")
	}
}

func TestConcurrentPullsSameImage(t *testing.T) {
	host := startRegistry(t, "", "")
	img := testImage(t, tarLayer(t, baseEntries), tarLayer(t, topEntries))
	push(t, host+"/app:c", img)
	s := openStore(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			_, err := s.Pull(context.Background(), host+"/app:c", PullOptions{})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if l := s.List(); len(l) != 1 {
		t.Fatalf("%d images", len(l))
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Dir(), tmpDir)); len(ents) != 0 {
		t.Fatalf("temp leftovers: %v", ents)
	}
}

func TestPullAuth(t *testing.T) {
	host := startRegistry(t, "alice", "s3cret")
	img := testImage(t, tarLayer(t, baseEntries))
	push(t, host+"/private:1", img, remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"}))

	s := openStore(t)
	ctx := context.Background()
	dir := t.TempDir()

	none := filepath.Join(dir, "empty.json")
	os.WriteFile(none, []byte(`{}`), 0o600)
	_, err := s.Pull(ctx, host+"/private:1", PullOptions{AuthConfigPath: none})
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "credentials") {
		t.Fatalf("pull without credentials: %v", err)
	}
	t.Log(err)

	wrong := filepath.Join(dir, "wrong.json")
	os.WriteFile(wrong, fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, host, base64.StdEncoding.EncodeToString([]byte("alice:nope"))), 0o600)
	if _, err := s.Pull(ctx, host+"/private:1", PullOptions{AuthConfigPath: wrong}); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("pull with wrong credentials: %v", err)
	}

	good := filepath.Join(dir, "config.json")
	os.WriteFile(good, fmt.Appendf(nil, `{"auths":{"http://%s/v2/":{"auth":%q}}}`, host, base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))), 0o600)
	got, err := s.Pull(ctx, host+"/private:1", PullOptions{AuthConfigPath: good})
	if err != nil {
		t.Fatalf("pull with credentials: %v", err)
	}
	checkImage(t, got, img)

	// DOCKER_CONFIG is the default location.
	t.Setenv("DOCKER_CONFIG", dir)
	if _, err := s.Resolve(ctx, host+"/private:1", PullOptions{}); err != nil {
		t.Fatalf("resolve with $DOCKER_CONFIG credentials: %v", err)
	}
	if len(s.List()) != 1 {
		t.Fatal("failed pulls changed the store")
	}
}

func TestPullNotFound(t *testing.T) {
	host := startRegistry(t, "", "")
	push(t, host+"/app:1", testImage(t, tarLayer(t, baseEntries)))
	s := openStore(t)
	for _, ref := range []string{host + "/app:nope", host + "/missing:1"} {
		_, err := s.Pull(context.Background(), ref, PullOptions{})
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no such image") {
			t.Fatalf("pull %s: %v", ref, err)
		}
		t.Log(err)
		if _, err := s.Resolve(context.Background(), ref, PullOptions{}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("resolve %s: %v", ref, err)
		}
	}
	if _, err := s.Pull(context.Background(), "UPPER/case::bad", PullOptions{}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad reference: %v", err)
	}
}

func TestGC(t *testing.T) {
	host := startRegistry(t, "", "")
	shared := tarLayer(t, baseEntries)
	imgA := testImage(t, shared, tarLayer(t, topEntries))
	imgB := testImage(t, shared, tarLayer(t, []tarEntry{{name: "b", body: "bbbb"}}))
	imgC := testImage(t, tarLayer(t, []tarEntry{{name: "c", body: "cc"}}))
	push(t, host+"/a:1", imgA)
	push(t, host+"/b:1", imgB)
	push(t, host+"/c:1", imgC)
	s := openStore(t)
	ctx := context.Background()
	var a, b, c Image
	for _, p := range []struct {
		ref string
		out *Image
	}{{"a:1", &a}, {"b:1", &b}, {"c:1", &c}} {
		img, err := s.Pull(ctx, host+"/"+p.ref, PullOptions{})
		if err != nil {
			t.Fatal(err)
		}
		*p.out = img
	}
	// A leftover layer nobody uses (as after a crash before commit).
	stray := filepath.Join(s.Dir(), layersDir, strings.Repeat("ab", 32))
	os.MkdirAll(filepath.Join(stray, "x"), 0o755)

	if err := s.Remove(host + "/a:1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(c.Digest[:19]); err != nil { // by digest prefix
		t.Fatal(err)
	}
	inUse := func(d string) bool { return d == c.Digest }
	removed, freed, err := s.GC(ctx, inUse)
	if err != nil {
		t.Fatal(err)
	}
	// a is gone (dangling, not in use); c is dangling but in use; b stays.
	if removed != 1 || freed != int64(len("conf")) {
		t.Fatalf("removed %d freed %d", removed, freed)
	}
	if _, ok := s.Get(a.Digest); ok {
		t.Error("image a still present")
	}
	if _, ok := s.Get(c.Digest); !ok {
		t.Error("in-use image c removed")
	}
	for _, l := range append(b.Layers, c.Layers...) {
		if _, err := os.Stat(l); err != nil {
			t.Errorf("layer of a kept image removed: %v", err)
		}
	}
	if _, err := os.Stat(a.Layers[1]); err == nil {
		t.Error("layer only a used is still there")
	}
	if _, err := os.Stat(stray); err == nil {
		t.Error("stray layer not collected")
	}
	// Once c is no longer in use it goes too.
	if removed, _, err := s.GC(ctx, nil); err != nil || removed != 1 {
		t.Fatalf("second GC removed %d, %v", removed, err)
	}
	if _, err := os.Stat(c.Layers[0]); err == nil {
		t.Error("layer of c not collected")
	}
	if l := s.List(); len(l) != 1 || l[0].Digest != b.Digest {
		t.Fatalf("List = %+v", l)
	}
}

func TestOverlayOptions(t *testing.T) {
	got, err := OverlayOptions([]string{"/l/top", "/l/bottom"}, "/u", "/w")
	if err != nil || got != "lowerdir=/l/top:/l/bottom,upperdir=/u,workdir=/w" {
		t.Fatalf("%q %v", got, err)
	}
	long := make([]string, 80)
	for i := range long {
		long[i] = "/var/lib/shoal/images/layers/" + strings.Repeat("a", 64)
	}
	if _, err := OverlayOptions(long, "/u", "/w"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("too long: %v", err)
	}
	if _, err := OverlayOptions([]string{"/a:b"}, "/u", "/w"); err == nil {
		t.Fatal("colon in path accepted")
	}
}

func TestOpenRefusesNegativeLimits(t *testing.T) {
	for _, lim := range []Limits{{MaxLayerBytes: -1}, {MaxLayerEntries: -5}} {
		if _, err := OpenWithLimits(t.TempDir(), nil, lim); err == nil || !strings.Contains(err.Error(), "must not be negative") {
			t.Errorf("OpenWithLimits(%+v) = %v, want a refusal", lim, err)
		}
	}
}
