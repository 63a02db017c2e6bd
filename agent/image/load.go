package image

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/shoal-dev/shoal/errdefs"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Annotations naming an image in an OCI index.
const (
	annotationRefName        = "org.opencontainers.image.ref.name"
	annotationContainerdName = "io.containerd.image.name"
)

// ErrBadArchive is wrapped when the input of Load is not a readable image
// archive (unknown format, truncated, corrupt).
var ErrBadArchive = errdefs.InvalidArgument(errors.New("bad image archive"))

// Load imports every image of an OCI image layout directory, an OCI archive
// (a tar of such a layout) or a `docker save` tarball (optionally gzipped).
// Either all of its images are added or, on any error, none: the index is
// written once at the end, and layers unpacked for a failed load are
// removed again.
func (s *Store) Load(ctx context.Context, p string) ([]Image, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("load images: %w", err)
	}
	o := s.newOp()
	var imgs []Image
	failed := true
	defer func() { o.done(failed) }()

	if fi.IsDir() {
		if _, err := os.Stat(filepath.Join(p, "oci-layout")); err != nil {
			return nil, fmt.Errorf("load %q: %w: directory is not an OCI image layout (no oci-layout file)", p, ErrBadArchive)
		}
		imgs, err = s.loadLayout(ctx, o, p)
	} else {
		imgs, err = s.loadArchive(ctx, o, p)
	}
	if err != nil {
		return nil, fmt.Errorf("load %q: %w", p, err)
	}
	failed = false
	for _, img := range imgs {
		s.logger.Info("image loaded", "digest", img.Digest, "refs", img.References, "layers", len(img.Layers))
	}
	return imgs, nil
}

func (s *Store) loadArchive(ctx context.Context, o *op, p string) ([]Image, error) {
	scratch, err := os.MkdirTemp(filepath.Join(s.dir, tmpDir), "load-")
	if err != nil {
		return nil, fmt.Errorf("scratch dir: %w", err)
	}
	defer os.RemoveAll(scratch)

	tarPath, err := gunzipIfNeeded(ctx, p, scratch)
	if err != nil {
		return nil, err
	}
	// Read the whole archive once before touching the store: a truncated
	// or corrupt tar fails here with a clear message.
	names, err := scanTar(ctx, tarPath)
	if err != nil {
		return nil, err
	}
	switch {
	case names["manifest.json"]:
		// docker save (also written by docker ≥ 25 next to an OCI layout;
		// manifest.json carries the RepoTags, so it wins).
		return s.loadDockerArchive(ctx, o, tarPath)
	case names["oci-layout"] && names["index.json"]:
		dir := filepath.Join(scratch, "layout")
		if err := extractPlain(ctx, tarPath, dir); err != nil {
			return nil, err
		}
		return s.loadLayout(ctx, o, dir)
	default:
		return nil, fmt.Errorf("%w: neither an OCI archive (oci-layout, index.json) nor a docker save tarball (manifest.json)", ErrBadArchive)
	}
}

// gunzipIfNeeded returns p, or the path of a decompressed copy in scratch
// when p is gzip-compressed (tarball.Image needs to reopen a plain tar).
func gunzipIfNeeded(ctx context.Context, p, scratch string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	magic, _ := br.Peek(2)
	if len(magic) < 2 || magic[0] != 0x1f || magic[1] != 0x8b {
		return p, nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return "", fmt.Errorf("%w: gzip: %v", ErrBadArchive, err)
	}
	out, err := os.Create(filepath.Join(scratch, "archive.tar"))
	if err != nil {
		return "", err
	}
	defer out.Close()
	if _, err := io.Copy(out, &ctxReader{ctx: ctx, r: zr}); err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", fmt.Errorf("%w: gzip stream truncated or corrupt: %v", ErrBadArchive, err)
	}
	return out.Name(), out.Close()
}

// scanTar reads every entry of a tar and returns the set of cleaned names.
func scanTar(ctx context.Context, p string) (map[string]bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names := map[string]bool{}
	// archive/tar treats a stream that stops cleanly between entries as
	// the end; a real archive ends with two zero blocks. Counting the bytes
	// the reader consumed tells the two apart, so an archive cut at an
	// entry boundary is reported as truncated too.
	cr := &countingReader{r: bufio.NewReader(f)}
	tr := tar.NewReader(cr)
	var end int64 // offset just past the last entry's data and padding
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: archive truncated or corrupt after %d entries: %v", ErrBadArchive, len(names), err)
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return nil, fmt.Errorf("%w: archive truncated or corrupt in entry %q: %v", ErrBadArchive, hdr.Name, err)
		}
		end = cr.n + (512-cr.n%512)%512
		names[path.Clean(strings.TrimPrefix(hdr.Name, "/"))] = true
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: not a tar archive, or an empty one", ErrBadArchive)
	}
	if cr.n-end < 1024 {
		return nil, fmt.Errorf("%w: archive truncated: it stops after %d entries without the end-of-archive marker", ErrBadArchive, len(names))
	}
	return names, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// extractPlain unpacks an OCI archive's regular files and directories into
// dir (blobs and index only: nothing else belongs in a layout), refusing
// names that climb out of dir.
func extractPlain(ctx context.Context, p, dir string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tr := tar.NewReader(bufio.NewReader(f))
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadArchive, err)
		}
		rel, err := cleanName(hdr.Name)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadArchive, err)
		}
		target := filepath.Join(dir, filepath.FromSlash(rel))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o700); err != nil {
				return err
			}
		case tar.TypeReg, tar.TypeRegA:
			if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
				return err
			}
			// O_EXCL and no symlinks ever created here: nothing to follow.
			out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("%w: entry %q: %v", ErrBadArchive, hdr.Name, err)
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("extract %q: %w", hdr.Name, err)
			}
		default:
			// Links and devices have no place in an OCI layout.
		}
	}
}

// loadLayout imports the images listed in an OCI layout's index.json.
func (s *Store) loadLayout(ctx context.Context, o *op, dir string) ([]Image, error) {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: OCI layout: %v", ErrBadArchive, err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("%w: OCI layout index: %v", ErrBadArchive, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%w: OCI layout index: %v", ErrBadArchive, err)
	}
	if len(im.Manifests) == 0 {
		return nil, fmt.Errorf("%w: OCI layout lists no images", ErrBadArchive)
	}
	var ps []*pending
	for _, desc := range im.Manifests {
		refs := layoutRefs(desc.Annotations)
		var img v1.Image
		switch {
		case desc.MediaType.IsIndex():
			child, err := idx.ImageIndex(desc.Digest)
			if err != nil {
				return nil, fmt.Errorf("%w: nested index %s: %v", ErrBadArchive, short(desc.Digest.String()), err)
			}
			img, err = pickPlatform(child)
			if err != nil {
				return nil, err
			}
		case desc.MediaType.IsImage():
			img, err = idx.Image(desc.Digest)
			if err != nil {
				return nil, fmt.Errorf("%w: image %s: %v", ErrBadArchive, short(desc.Digest.String()), err)
			}
		default:
			s.logger.Debug("skipping non-image manifest in layout", "digest", desc.Digest.String(), "media_type", string(desc.MediaType))
			continue
		}
		p, err := o.prepare(ctx, img, refs)
		if err != nil {
			return nil, badArchiveUnlessCtx(ctx, err)
		}
		ps = append(ps, p)
	}
	if len(ps) == 0 {
		return nil, fmt.Errorf("%w: OCI layout holds no image manifests", ErrBadArchive)
	}
	return s.commit(ps)
}

// layoutRefs names an image from its index annotations: containerd's full
// name if present, else ref.name when it is a full reference. A bare tag
// ("latest") names nothing on its own, so it is not guessed at.
func layoutRefs(ann map[string]string) []string {
	for _, key := range []string{annotationContainerdName, annotationRefName} {
		v := ann[key]
		if v == "" || !strings.ContainsAny(v, "/:@") {
			continue
		}
		if r, err := name.ParseReference(v); err == nil {
			return []string{r.Name()}
		}
	}
	return nil
}

// pickPlatform chooses linux/GOARCH from an index.
func pickPlatform(idx v1.ImageIndex) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%w: index: %v", ErrBadArchive, err)
	}
	var seen []string
	for _, d := range im.Manifests {
		if d.Platform == nil {
			continue
		}
		seen = append(seen, d.Platform.String())
		if d.Platform.OS == "linux" && d.Platform.Architecture == runtime.GOARCH && d.MediaType.IsImage() {
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("%w: image %s: %v", ErrBadArchive, short(d.Digest.String()), err)
			}
			return img, nil
		}
	}
	return nil, fmt.Errorf("%w: no linux/%s image in index (has %s)", ErrNotFound, runtime.GOARCH, strings.Join(seen, ", "))
}

// loadDockerArchive imports the images of a `docker save` tarball.
func (s *Store) loadDockerArchive(ctx context.Context, o *op, p string) ([]Image, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(p) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("%w: docker archive manifest.json: %v", ErrBadArchive, err)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("%w: docker archive lists no images", ErrBadArchive)
	}
	var ps []*pending
	for i, d := range m {
		var tag *name.Tag
		var refs []string
		for _, rt := range d.RepoTags {
			t, err := name.NewTag(rt)
			if err != nil {
				return nil, fmt.Errorf("%w: RepoTag %q: %v", ErrBadArchive, rt, err)
			}
			if tag == nil {
				tag = &t
			}
			refs = append(refs, t.Name())
		}
		if tag == nil && len(m) > 1 {
			// tarball.Image can only pick an untagged image when it is alone.
			return nil, fmt.Errorf("%w: image %d of %d in docker archive has no RepoTags", ErrBadArchive, i+1, len(m))
		}
		img, err := tarball.Image(opener, tag)
		if err != nil {
			return nil, fmt.Errorf("%w: docker archive image %d: %v", ErrBadArchive, i+1, err)
		}
		slices.Sort(refs)
		pend, err := o.prepare(ctx, img, slices.Compact(refs))
		if err != nil {
			return nil, badArchiveUnlessCtx(ctx, err)
		}
		ps = append(ps, pend)
	}
	return s.commit(ps)
}

func badArchiveUnlessCtx(ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, ErrBadArchive) || errors.Is(err, ErrNotFound) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrBadArchive, err)
}
