package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"
)

// Device nodes chosen by the image are refused (a block device of the
// host's disk inside a container is a way out of it); 0/0 character
// devices (overlayfs whiteouts) and fifos are kept.
func TestUntarRefusesDevices(t *testing.T) {
	requireRoot(t) // without root mknod fails anyway, and the test would prove nothing
	for _, tc := range []tarEntry{
		{name: "dev/sda", typ: tar.TypeBlock, major: 8, minor: 0, mode: 0o660},
		{name: "dev/null", typ: tar.TypeChar, major: 1, minor: 3, mode: 0o666},
		{name: "dev/mem", typ: tar.TypeChar, major: 1, minor: 1, mode: 0o640},
		{name: "dev/odd", typ: tar.TypeChar, major: 0, minor: 5, mode: 0o640},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, root, err := untarInto(t, []tarEntry{{name: "dev/", typ: tar.TypeDir}, tc})
			if !errors.Is(err, errUnsafe) || !strings.Contains(err.Error(), "device") {
				t.Fatalf("err = %v, want a refusal of the device", err)
			}
			if _, err := os.Lstat(filepath.Join(root, tc.name)); err == nil {
				t.Fatal("device node created")
			}
		})
	}
	_, root, err := untarInto(t, []tarEntry{
		{name: "etc/", typ: tar.TypeDir},
		{name: "etc/gone", typ: tar.TypeChar, mode: 0o644}, // 0/0: a whiteout in overlayfs form
		{name: "run/", typ: tar.TypeDir},
		{name: "run/pipe", typ: tar.TypeFifo, mode: 0o600},
	})
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "etc/gone"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout: mode %o rdev %d, %v; want char 0/0", st.Mode, st.Rdev, err)
	}
	if err := unix.Lstat(filepath.Join(root, "run/pipe"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("fifo: mode %o, %v", st.Mode, err)
	}
}

func untarLimited(t *testing.T, entries []tarEntry, lim Limits) error {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := untar(context.Background(), root, bytes.NewReader(buildTar(t, entries)), testLogger(t), lim)
	return err
}

func TestUntarLimits(t *testing.T) {
	lim := Limits{MaxLayerBytes: 1000, MaxLayerEntries: 10}
	many := func(n int) []tarEntry {
		var es []tarEntry
		for i := range n {
			es = append(es, tarEntry{name: "f" + strings.Repeat("x", i)})
		}
		return es
	}
	deep := strings.Repeat("d/", 20) + "file"
	for _, tc := range []struct {
		name    string
		entries []tarEntry
		flag    string // in the error; "" means accepted
	}{
		{"at the byte limit", []tarEntry{{name: "a", body: strings.Repeat("x", 600)}, {name: "b", body: strings.Repeat("x", 400)}}, ""},
		{"past the byte limit", []tarEntry{{name: "a", body: strings.Repeat("x", 600)}, {name: "b", body: strings.Repeat("x", 401)}}, "--max-layer-bytes"},
		{"at the entry limit", many(10), ""},
		{"past the entry limit", many(11), "--max-layer-entries"},
		// One entry whose parents are not in the archive makes a
		// directory per component: they count.
		{"deep name", []tarEntry{{name: deep}}, "--max-layer-entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := untarLimited(t, tc.entries, lim)
			if tc.flag == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), tc.flag) {
				t.Fatalf("err = %v, want ErrLimit naming %s", err, tc.flag)
			}
		})
	}
}

// gzipLayer is a layer whose blob is the gzip of the tar of entries.
func gzipLayer(t *testing.T, tarBytes []byte) v1.Layer {
	t.Helper()
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if _, err := zw.Write(tarBytes); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	b := gz.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// bombTar is a tar holding one entry of typ with size bytes of zeros.
func bombTar(t *testing.T, typ byte, size int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "bomb", Typeflag: typ, Size: size, Mode: 0o644, Format: tar.FormatPAX}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(tw, zeros{}, size); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// A gzip bomb (a small blob that inflates past the node's limit) is
// refused with the reason, and leaves nothing in the store: no layer, no
// temp dir, no image. So is a bomb hidden in an entry the unpacker skips
// (it is never written, but inflating it would burn CPU for as long as
// the bomb says).
func TestLoadGzipBombRefused(t *testing.T) {
	const inflated = 8 << 20
	for _, tc := range []struct {
		name string
		typ  byte
		want string
	}{
		{"file", tar.TypeReg, "--max-layer-bytes"},
		{"skipped entry type", 'Z', "larger than its limits allow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := OpenWithLimits(filepath.Join(t.TempDir(), "images"), testLogger(t), Limits{MaxLayerBytes: 1 << 20, MaxLayerEntries: 100})
			if err != nil {
				t.Fatal(err)
			}
			// A good layer below the bomb: unpacked, then taken back.
			img := testImage(t, tarLayer(t, baseEntries), gzipLayer(t, bombTar(t, tc.typ, inflated)))
			ls, _ := img.Layers()
			if size, _ := ls[1].Size(); size > inflated/100 {
				t.Fatalf("the bomb's blob is %d bytes, not a bomb", size)
			}
			dir := filepath.Join(t.TempDir(), "layout")
			writeOCILayout(t, dir, img, "example.com/bomb:1")
			_, err = s.Load(context.Background(), dir)
			if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrLimit naming %q", err, tc.want)
			}
			t.Log(err)
			if len(s.List()) != 0 {
				t.Error("image recorded")
			}
			for _, d := range []string{layersDir, tmpDir} {
				if ents, _ := os.ReadDir(filepath.Join(s.Dir(), d)); len(ents) != 0 {
					t.Errorf("%s/ not empty: %v", d, ents)
				}
			}
		})
	}
}

// A manifest whose config descriptor claims a huge size is refused before
// the config is fetched: the config is read into memory whole, as long as
// the manifest says (a registry can inflate it from a small gzip body).
func TestPullHugeConfigRefused(t *testing.T) {
	const claimed = 64 << 20
	cfgDigest := "sha256:" + strings.Repeat("c", 64)
	layerDigest := "sha256:" + strings.Repeat("1", 64)
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":%d,"digest":%q},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":10,"digest":%q}]}`, claimed, cfgDigest, layerDigest)
	var configFetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
		case strings.HasPrefix(r.URL.Path, "/v2/big/manifests/"):
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", "sha256:"+fmt.Sprintf("%x", sha256.Sum256([]byte(manifest))))
			w.Header().Set("Content-Length", strconv.Itoa(len(manifest)))
			if r.Method != http.MethodHead {
				io.WriteString(w, manifest)
			}
		case r.URL.Path == "/v2/big/blobs/"+cfgDigest:
			configFetches.Add(1)
			w.Header().Set("Content-Length", strconv.Itoa(claimed))
			io.CopyN(w, zeros{}, claimed)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	s, err := Open(filepath.Join(t.TempDir(), "images"), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Pull(context.Background(), strings.TrimPrefix(srv.URL, "http://")+"/big:1", PullOptions{})
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "config") {
		t.Fatalf("err = %v, want ErrLimit about the config", err)
	}
	if n := configFetches.Load(); n != 0 {
		t.Errorf("the config was fetched %d times", n)
	}
	if len(s.List()) != 0 {
		t.Error("image recorded")
	}
}

// An image of more layers than maxLayers is refused before any is
// unpacked: the per-layer limits would not bound it otherwise.
func TestLoadTooManyLayersRefused(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "images"), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var layers []v1.Layer
	for i := range maxLayers + 1 {
		layers = append(layers, tarLayer(t, []tarEntry{{name: fmt.Sprintf("f%d", i), body: "x"}}))
	}
	dir := filepath.Join(t.TempDir(), "layout")
	writeOCILayout(t, dir, testImage(t, layers...), "example.com/many:1")
	_, err = s.Load(context.Background(), dir)
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "layers") {
		t.Fatalf("err = %v, want ErrLimit about the layers", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Dir(), layersDir)); len(ents) != 0 {
		t.Errorf("%d layers unpacked", len(ents))
	}
}
