package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// keyedMutex is a set of context-aware mutexes, one per key, that exist
// only while someone holds or waits for them.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	ch   chan struct{} // holds one token while locked
	refs int
}

func (k *keyedMutex) lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{ch: make(chan struct{}, 1)}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()

	release := func() {
		k.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// op tracks one pull or load: the layers it pinned (so GC leaves them
// alone until the image is committed) and the layers it unpacked (so a
// failed operation can take them back and leave the store unchanged).
type op struct {
	s       *Store
	pinned  []string
	created []string
}

func (s *Store) newOp() *op { return &op{s: s} }

func (o *op) pin(diffID string) {
	o.s.mu.Lock()
	o.s.active[diffID]++
	o.s.mu.Unlock()
	o.pinned = append(o.pinned, diffID)
}

// done unpins the op's layers; if the op failed it also removes the layers
// it created that no committed image uses.
func (o *op) done(failed bool) {
	s := o.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range o.pinned {
		if s.active[d]--; s.active[d] <= 0 {
			delete(s.active, d)
		}
	}
	if !failed {
		return
	}
	used := s.usedLayers()
	for _, d := range o.created {
		if used[d] || s.active[d] > 0 {
			continue
		}
		if err := s.discardLayer(d); err != nil {
			s.logger.Warn("could not remove layer of failed operation", "layer", d, "err", err)
		}
	}
}

// usedLayers is the set of diff ids referenced by indexed images. Callers
// hold s.mu.
func (s *Store) usedLayers() map[string]bool {
	used := map[string]bool{}
	for _, rec := range s.idx.Images {
		for _, d := range rec.DiffIDs {
			used[d] = true
		}
	}
	return used
}

// discardLayer moves a layer dir into tmp/ (one atomic rename, so it is
// never seen half-deleted) and removes it. Callers hold s.mu.
func (s *Store) discardLayer(diffID string) error {
	trash, err := os.MkdirTemp(filepath.Join(s.dir, tmpDir), "rm-")
	if err != nil {
		return fmt.Errorf("remove layer %q: %w", diffID, err)
	}
	if err := os.Rename(s.layerPath(diffID), filepath.Join(trash, "l")); err != nil && !errors.Is(err, os.ErrNotExist) {
		os.Remove(trash)
		return fmt.Errorf("remove layer %q: %w", diffID, err)
	}
	delete(s.idx.Layers, diffID) // in memory only; the next index write persists it
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("remove layer %q: %w", diffID, err)
	}
	return nil
}

// layerSizes remembers sizes of layers unpacked by an op until commit.
type unpacked struct {
	diffID string
	size   int64
}

// ensureLayer makes sure the layer is unpacked in the content store,
// unpacking it if needed. Two callers with the same layer serialise on a
// per-layer lock; the second finds it done.
func (o *op) ensureLayer(ctx context.Context, layer v1.Layer) (unpacked, error) {
	s := o.s
	h, err := layer.DiffID()
	if err != nil {
		return unpacked{}, fmt.Errorf("layer diff id: %w", err)
	}
	if h.Algorithm != "sha256" || len(h.Hex) != 64 {
		return unpacked{}, fmt.Errorf("%w: unsupported layer digest %q", ErrInvalidArgument, h.String())
	}
	diffID := h.String()
	o.pin(diffID)

	unlock, err := s.layerLocks.lock(ctx, diffID)
	if err != nil {
		return unpacked{}, fmt.Errorf("wait for layer %s: %w", short(diffID), err)
	}
	defer unlock()

	final := s.layerPath(diffID)
	if _, err := os.Lstat(final); err == nil {
		size, err := s.knownLayerSize(diffID)
		if err != nil {
			return unpacked{}, err
		}
		s.logger.Debug("layer already unpacked", "layer", diffID)
		return unpacked{diffID: diffID, size: size}, nil
	}

	start := time.Now()
	tmp, err := os.MkdirTemp(filepath.Join(s.dir, tmpDir), "layer-"+h.Hex[:12]+"-")
	if err != nil {
		return unpacked{}, fmt.Errorf("unpack layer %s: %w", short(diffID), err)
	}
	keep := false
	defer func() {
		if !keep {
			os.RemoveAll(tmp)
		}
	}()
	// The layer root is a directory of its own, so that its mode (from a
	// "./" entry, if any) can be set without touching tmp/.
	root := filepath.Join(tmp, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		return unpacked{}, fmt.Errorf("unpack layer %s: %w", short(diffID), err)
	}

	rc, err := layer.Uncompressed()
	if err != nil {
		return unpacked{}, fmt.Errorf("open layer %s: %w", short(diffID), err)
	}
	defer rc.Close()
	hasher := sha256.New()
	// The stream itself is bounded too: entries of unknown types, and
	// data after the archive's end, are read (to be skipped or hashed)
	// but never written, and a bomb of them would burn CPU for hours.
	// The bound leaves room for the headers and padding of a layer at
	// both limits.
	capped := &capReader{r: &ctxReader{ctx: ctx, r: rc}, left: s.limits.MaxLayerBytes + int64(s.limits.MaxLayerEntries)*4096, limits: s.limits}
	tee := io.TeeReader(capped, hasher)
	st, err := untar(ctx, root, tee, s.logger, s.limits)
	if err != nil {
		return unpacked{}, fmt.Errorf("unpack layer %s: %w", short(diffID), err)
	}
	// Hash the tar padding too, then check the whole stream: a layer that
	// does not match its diff id is never used.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return unpacked{}, fmt.Errorf("read layer %s: %w", short(diffID), err)
	}
	if err := rc.Close(); err != nil {
		return unpacked{}, fmt.Errorf("read layer %s: %w", short(diffID), err)
	}
	if got := hex.EncodeToString(hasher.Sum(nil)); got != h.Hex {
		return unpacked{}, fmt.Errorf("layer %s: content digest is sha256:%s: archive corrupt", short(diffID), got)
	}
	// One syncfs makes every file of the layer durable before the rename
	// publishes it; cheaper than an fsync per file.
	if err := syncFS(root); err != nil {
		return unpacked{}, fmt.Errorf("sync layer %s: %w", short(diffID), err)
	}
	if err := os.Rename(root, final); err != nil {
		return unpacked{}, fmt.Errorf("publish layer %s: %w", short(diffID), err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return unpacked{}, err
	}
	s.mu.Lock()
	s.idx.Layers[diffID] = &layerRecord{Size: st.Bytes}
	s.mu.Unlock()
	o.created = append(o.created, diffID)
	s.logger.Info("layer unpacked", "layer", diffID, "entries", st.Entries, "bytes", st.Bytes, "took", time.Since(start).Round(time.Millisecond))
	return unpacked{diffID: diffID, size: st.Bytes}, nil
}

// knownLayerSize returns the recorded size of an unpacked layer, measuring
// it if the record is missing (a layer unpacked before a crash).
func (s *Store) knownLayerSize(diffID string) (int64, error) {
	s.mu.Lock()
	l := s.idx.Layers[diffID]
	s.mu.Unlock()
	if l != nil {
		return l.Size, nil
	}
	size, err := dirSize(s.layerPath(diffID))
	if err != nil {
		return 0, fmt.Errorf("measure layer %s: %w", short(diffID), err)
	}
	s.mu.Lock()
	s.idx.Layers[diffID] = &layerRecord{Size: size}
	s.mu.Unlock()
	return size, nil
}

func dirSize(root string) (int64, error) {
	var n int64
	err := filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}

func syncFS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

// capReader fails with ErrLimit once more than left bytes were read.
type capReader struct {
	r      io.Reader
	left   int64
	limits Limits
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left < 0 {
		return 0, fmt.Errorf("%w: the archive is larger than its limits allow (node settings --max-layer-bytes %d, --max-layer-entries %d)", ErrLimit, c.limits.MaxLayerBytes, c.limits.MaxLayerEntries)
	}
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// pending is an image whose layers are unpacked, ready to commit.
type pending struct {
	rec *imageRecord
}

// prepare unpacks img's layers and builds its record.
func (o *op) prepare(ctx context.Context, img v1.Image, refs []string) (*pending, error) {
	digest, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("image digest: %w", err)
	}
	// The config is read into memory whole (ConfigName reads it too), as
	// long as the manifest says it is (a registry serves that much,
	// inflated from whatever it sends): bound it before it is fetched.
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("image %s: manifest: %w", short(digest.String()), err)
	}
	if m.Config.Size > maxConfigBytes {
		return nil, fmt.Errorf("image %s: %w: its config is %d bytes, more than %d", short(digest.String()), ErrLimit, m.Config.Size, maxConfigBytes)
	}
	// The layer limits bound one layer; this bounds how many of them an
	// image unpacks (before any is).
	if len(m.Layers) > maxLayers {
		return nil, fmt.Errorf("image %s: %w: %d layers, more than %d", short(digest.String()), ErrLimit, len(m.Layers), maxLayers)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return nil, fmt.Errorf("image %s: config digest: %w", short(digest.String()), err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %s: read config: %w", short(digest.String()), err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("image %s: layers: %w", short(digest.String()), err)
	}
	if len(layers) != len(cf.RootFS.DiffIDs) {
		return nil, fmt.Errorf("image %s: manifest has %d layers, config %d diff ids", short(digest.String()), len(layers), len(cf.RootFS.DiffIDs))
	}
	rec := &imageRecord{
		Digest:     digest.String(),
		ID:         cfgName.String(),
		References: refs,
		Created:    cf.Created.UTC(),
		LastUsed:   time.Now().UTC(),
	}
	c := cf.Config
	rec.Config = Config{
		Entrypoint: c.Entrypoint,
		Cmd:        c.Cmd,
		Env:        c.Env,
		WorkingDir: c.WorkingDir,
		User:       c.User,
		Labels:     c.Labels,
		StopSignal: c.StopSignal,
	}
	if h := c.Healthcheck; h != nil && len(h.Test) > 0 {
		rec.Config.Healthcheck = &Healthcheck{Test: h.Test, Interval: h.Interval, Timeout: h.Timeout,
			StartPeriod: h.StartPeriod, Retries: h.Retries}
	}
	for p := range c.ExposedPorts {
		rec.Config.ExposedPorts = append(rec.Config.ExposedPorts, p)
	}
	slices.Sort(rec.Config.ExposedPorts)
	for i, l := range layers {
		u, err := o.ensureLayer(ctx, l)
		if err != nil {
			return nil, fmt.Errorf("image %s: layer %d/%d: %w", short(digest.String()), i+1, len(layers), err)
		}
		rec.DiffIDs = append(rec.DiffIDs, u.diffID)
	}
	return &pending{rec: rec}, nil
}

// commit adds images to the index in one atomic write. A reference moves
// to the new image if another image held it (a re-tag, as after pulling a
// newer "latest"); the old image keeps its other references or becomes
// dangling.
func (s *Store) commit(ps []*pending) ([]Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.idx.clone()
	for _, p := range ps {
		rec := p.rec
		for _, other := range next.Images {
			if other.Digest == rec.Digest {
				continue
			}
			other.References = slices.DeleteFunc(other.References, func(r string) bool { return slices.Contains(rec.References, r) })
		}
		if old := next.Images[rec.Digest]; old != nil {
			refs := append(slices.Clone(old.References), rec.References...)
			slices.Sort(refs)
			rec.References = slices.Compact(refs)
		}
		next.Images[rec.Digest] = rec
	}
	if err := s.writeIndex(next); err != nil {
		return nil, err
	}
	s.idx = next
	out := make([]Image, 0, len(ps))
	for _, p := range ps {
		out = append(out, s.toImage(next.Images[p.rec.Digest]))
	}
	return out, nil
}

// short abbreviates a digest for messages.
func short(d string) string {
	_, hex, _ := strings.Cut(d, ":")
	if len(hex) > 12 {
		return "sha256:" + hex[:12]
	}
	return d
}
