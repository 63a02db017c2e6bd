package agentapi

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"google.golang.org/grpc/codes"

	"github.com/shoal-dev/shoal/agent/image"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

func openImages(t *testing.T) *image.Store {
	t.Helper()
	s, err := image.Open(filepath.Join(t.TempDir(), "images"), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dockerArchive is a `docker save` tarball of a random one-layer image.
func dockerArchive(t *testing.T, ref string) []byte {
	t.Helper()
	img, err := random.Image(2048, 1)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "img.tar")
	if err := tarball.WriteToFile(p, tag, img); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// upload sends data in chunks of chunk bytes.
func upload(t *testing.T, cl shoalv1.AgentAPIClient, data []byte, chunk int) (*shoalv1.LoadImageResponse, error) {
	t.Helper()
	st, err := cl.LoadImage(testCtx(t))
	if err != nil {
		return nil, err
	}
	for len(data) > 0 {
		n := min(chunk, len(data))
		if err := st.Send(&shoalv1.LoadImageChunk{Data: data[:n]}); err != nil {
			break // the server ended the call; CloseAndRecv says why
		}
		data = data[n:]
	}
	return st.CloseAndRecv()
}

type imageServer struct {
	cl    shoalv1.AgentAPIClient
	store *image.Store
	srv   *Server
}

func newImageServer(t *testing.T, cfg Config) *imageServer {
	t.Helper()
	c := newTestCA(t)
	store := openImages(t)
	cfg.NodeID, cfg.Images, cfg.Logger = "n1", store, testLogger(t)
	srv := New(cfg)
	addr := serve(t, c.node("n1", trust.RoleWorker), srv)
	return &imageServer{cl: client(t, addr, "n1", c.adminTLS()), store: store, srv: srv}
}

// tmpEmpty checks that no upload is left in the store's tmp area.
func (s *imageServer) tmpEmpty(t *testing.T) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(s.store.Dir(), "tmp"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if len(ents) > 0 {
		t.Errorf("left in tmp/: %v", ents)
	}
}

func TestImages(t *testing.T) {
	s := newImageServer(t, Config{})
	resp, err := upload(t, s.cl, dockerArchive(t, "demo/app:1"), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetImages()) != 1 || !slices.Equal(resp.GetImages()[0].GetRefs(), []string{"index.docker.io/demo/app:1"}) ||
		!strings.HasPrefix(resp.GetImages()[0].GetDigest(), "sha256:") || resp.GetImages()[0].GetSize() <= 0 {
		t.Fatalf("loaded %v", resp.GetImages())
	}
	s.tmpEmpty(t)

	ls, err := s.cl.ListImages(testCtx(t), &shoalv1.ListImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ls.GetImages()) != 1 || ls.GetImages()[0].GetDigest() != resp.GetImages()[0].GetDigest() || ls.GetImages()[0].GetLastUsed() == nil {
		t.Fatalf("listed %v", ls.GetImages())
	}
	if _, err := s.cl.RemoveImage(testCtx(t), &shoalv1.RemoveImageRequest{Ref: "demo/app:1"}); err != nil {
		t.Fatal(err)
	}
	_, err = s.cl.RemoveImage(testCtx(t), &shoalv1.RemoveImageRequest{Ref: "demo/app:1"})
	wantCode(t, err, codes.NotFound, "demo/app:1")
	// Without CollectImages the untagged image stays until a collection.
	if ls, _ := s.cl.ListImages(testCtx(t), &shoalv1.ListImagesRequest{}); len(ls.GetImages()) != 1 || len(ls.GetImages()[0].GetRefs()) != 0 {
		t.Fatalf("after rm without collection: %v", ls.GetImages())
	}
	_, err = s.cl.RemoveImage(testCtx(t), &shoalv1.RemoveImageRequest{Ref: " "})
	wantCode(t, err, codes.InvalidArgument, "ref: required")
	_, err = s.cl.RemoveImage(testCtx(t), &shoalv1.RemoveImageRequest{Ref: "UPPER/Case:x"})
	wantCode(t, err, codes.InvalidArgument, "UPPER/Case:x")
}

func TestLoadImageRefused(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		free uint64 // 0: plenty
		data func(t *testing.T) []byte
		code codes.Code
		msg  string
	}{
		{"corrupt archive", Config{}, 0, func(*testing.T) []byte { return bytes.Repeat([]byte("junk"), 5000) },
			codes.InvalidArgument, "bad image archive"},
		{"truncated archive", Config{}, 0, func(t *testing.T) []byte { b := dockerArchive(t, "x:1"); return b[:len(b)/2] },
			codes.InvalidArgument, "bad image archive"},
		{"empty upload", Config{}, 0, func(*testing.T) []byte { return nil }, codes.InvalidArgument, "empty upload"},
		{"over the size cap", Config{MaxImageBytes: 10000}, 0, func(*testing.T) []byte { return make([]byte, 20000) },
			codes.ResourceExhausted, "larger than the limit of 10000 bytes"},
		{"disk nearly full", Config{}, 100 << 20, func(*testing.T) []byte { return make([]byte, 5000) },
			codes.ResourceExhausted, "not enough disk space"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newImageServer(t, tc.cfg)
			if tc.free > 0 {
				s.srv.freeBytes = func(string) (uint64, error) { return tc.free, nil }
			}
			_, err := upload(t, s.cl, tc.data(t), 4096)
			wantCode(t, err, tc.code, tc.msg)
			if strings.Contains(err.Error(), "upload-") {
				t.Errorf("the error names the temp file: %v", err)
			}
			s.tmpEmpty(t)
			if len(s.store.List()) != 0 {
				t.Errorf("a refused upload loaded images: %v", s.store.List())
			}
		})
	}
}

func TestImagesWithoutStore(t *testing.T) {
	c := newTestCA(t)
	addr := serve(t, c.node("n1", trust.RoleWorker), New(Config{NodeID: "n1"}))
	cl := client(t, addr, "n1", c.adminTLS())
	_, err := cl.ListImages(testCtx(t), &shoalv1.ListImagesRequest{})
	wantCode(t, err, codes.Unavailable, "no image store")
	_, err = upload(t, cl, []byte("x"), 10)
	wantCode(t, err, codes.Unavailable, "no image store")
	_, err = cl.RemoveImage(testCtx(t), &shoalv1.RemoveImageRequest{Ref: "x"})
	wantCode(t, err, codes.Unavailable, "no image store")
}

// TestRemoveLastTagCollects: with CollectImages wired (as the daemon does),
// removing an image's last tag deletes the image when no task uses it, so
// `image ls` shows no <none> left behind; an image a task uses stays,
// untagged, until that task is gone.
func TestRemoveLastTagCollects(t *testing.T) {
	var inUse atomic.Bool
	var s *imageServer
	s = newImageServer(t, Config{CollectImages: func(ctx context.Context) error {
		_, _, err := s.store.GC(ctx, func(string) bool { return inUse.Load() })
		return err
	}})
	if _, err := upload(t, s.cl, dockerArchive(t, "demo/app:1"), 1000); err != nil {
		t.Fatal(err)
	}
	inUse.Store(true)
	if _, err := s.cl.RemoveImage(testCtx(t), &shoalv1.RemoveImageRequest{Ref: "demo/app:1"}); err != nil {
		t.Fatal(err)
	}
	if ls, _ := s.cl.ListImages(testCtx(t), &shoalv1.ListImagesRequest{}); len(ls.GetImages()) != 1 {
		t.Fatalf("image in use was collected: %v", ls.GetImages())
	}
	inUse.Store(false)
	if _, err := upload(t, s.cl, dockerArchive(t, "demo/app:1"), 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := s.cl.RemoveImage(testCtx(t), &shoalv1.RemoveImageRequest{Ref: "demo/app:1"}); err != nil {
		t.Fatal(err)
	}
	if ls, _ := s.cl.ListImages(testCtx(t), &shoalv1.ListImagesRequest{}); len(ls.GetImages()) != 0 {
		t.Fatalf("untagged image left after rm: %v", ls.GetImages())
	}
}
