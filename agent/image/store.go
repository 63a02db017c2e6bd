package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"github.com/google/go-containerregistry/pkg/name"
)

// Error classes (of errdefs' classes), wrapped with %w; the gRPC edge maps
// them with errdefs.ToGRPC.
var (
	ErrNotFound        = errdefs.NotFound(errors.New("not found"))
	ErrInvalidArgument = errdefs.InvalidArgument(errors.New("invalid argument"))
	ErrAmbiguous       = errdefs.InvalidArgument(errors.New("ambiguous reference"))
)

const (
	indexFile   = "index.json"
	layersDir   = "layers"
	tmpDir      = "tmp"
	indexFormat = 1
)

// Config is the part of an image's config that running it needs.
type Config struct {
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	Env          []string          `json:"env,omitempty"`
	WorkingDir   string            `json:"working_dir,omitempty"`
	User         string            `json:"user,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	StopSignal   string            `json:"stop_signal,omitempty"`
	ExposedPorts []string          `json:"exposed_ports,omitempty"`
	// Healthcheck is the image's HEALTHCHECK (Docker-built images carry
	// one in their config); nil if it has none.
	Healthcheck *Healthcheck `json:"healthcheck,omitempty"`
}

// Healthcheck is an image's HEALTHCHECK: Test is {"NONE"}, {"CMD",
// args...} or {"CMD-SHELL", command}; zero timings mean the defaults.
type Healthcheck struct {
	Test        []string      `json:"test,omitempty"`
	Interval    time.Duration `json:"interval,omitempty"`
	Timeout     time.Duration `json:"timeout,omitempty"`
	StartPeriod time.Duration `json:"start_period,omitempty"`
	Retries     int           `json:"retries,omitempty"`
}

// Image is one image known to the store. It is a copy: changing it does
// not change the store.
type Image struct {
	// References are fully qualified names ("index.docker.io/library/x:1",
	// "host:5000/app@sha256:..."). An image without references is dangling
	// and only reachable by digest until GC removes it.
	References []string
	// Digest is the manifest digest ("sha256:..."), the image's identity.
	Digest string
	// ID is the config digest, what docker calls the image ID.
	ID     string
	Config Config
	// DiffIDs are the uncompressed layer digests, bottom first.
	DiffIDs []string
	// Layers are the unpacked layer directories, bottom first.
	Layers []string
	// Size is the sum of the layers' unpacked file contents.
	Size     int64
	Created  time.Time // from the image config
	LastUsed time.Time // last pull, load or MarkUsed
}

// imageRecord is an image in the index file.
type imageRecord struct {
	Digest     string    `json:"digest"`
	ID         string    `json:"id"`
	References []string  `json:"references,omitempty"`
	Config     Config    `json:"config"`
	DiffIDs    []string  `json:"diff_ids"`
	Created    time.Time `json:"created,omitzero"`
	LastUsed   time.Time `json:"last_used,omitzero"`
}

type layerRecord struct {
	Size int64 `json:"size"`
}

// index is the whole metadata of the store; it is small (a few KB per
// image) and rewritten whole on every change.
type index struct {
	Format int                     `json:"format"`
	Images map[string]*imageRecord `json:"images"` // by manifest digest
	Layers map[string]*layerRecord `json:"layers"` // by diff id
}

func newIndex() *index {
	return &index{Format: indexFormat, Images: map[string]*imageRecord{}, Layers: map[string]*layerRecord{}}
}

func (ix *index) clone() *index {
	c := newIndex()
	for k, v := range ix.Images {
		r := *v
		r.References = slices.Clone(v.References)
		r.DiffIDs = slices.Clone(v.DiffIDs)
		c.Images[k] = &r
	}
	for k, v := range ix.Layers {
		l := *v
		c.Layers[k] = &l
	}
	return c
}

// Store is the agent's image store. All methods are safe for concurrent use.
type Store struct {
	dir    string
	logger *slog.Logger
	limits Limits // what one layer may unpack to

	layerLocks keyedMutex // serialises unpacking of one layer

	// mu guards idx and active. It is held only for in-memory work and the
	// (small) index write, never while unpacking.
	mu  sync.Mutex
	idx *index
	// active counts the operations (pull, load) that are using a layer
	// and have not committed their image yet; GC leaves those layers alone.
	active map[string]int
}

// Open opens (creating if needed) the store rooted at dir, with the
// default layer limits. Leftovers of a crash (half-unpacked layers, temp
// files) are removed.
func Open(dir string, logger *slog.Logger) (*Store, error) {
	return OpenWithLimits(dir, logger, Limits{})
}

// OpenWithLimits is Open with limits on what one layer may unpack to
// (zero fields take the defaults).
func OpenWithLimits(dir string, logger *slog.Logger, lim Limits) (*Store, error) {
	if lim.MaxLayerBytes < 0 || lim.MaxLayerEntries < 0 {
		return nil, fmt.Errorf("image limits: --max-layer-bytes (%d) and --max-layer-entries (%d) must not be negative (0 means the default)", lim.MaxLayerBytes, lim.MaxLayerEntries)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("image store dir %q: %w", dir, err)
	}
	s := &Store{
		dir:    abs,
		logger: logger.With("component", "image"),
		limits: lim.withDefaults(),
		active: map[string]int{},
	}
	for _, d := range []string{abs, filepath.Join(abs, layersDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create image store: %w", err)
		}
	}
	// Anything under tmp/ belongs to an operation that did not finish.
	if err := os.RemoveAll(filepath.Join(abs, tmpDir)); err != nil {
		return nil, fmt.Errorf("clean image store temp dir: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(abs, tmpDir), 0o700); err != nil {
		return nil, fmt.Errorf("create image store temp dir: %w", err)
	}
	idx, err := readIndex(filepath.Join(abs, indexFile))
	if err != nil {
		return nil, err
	}
	s.idx = idx
	// Drop images whose layers vanished (e.g. removed by hand), rather than
	// handing out a rootfs with holes.
	changed := false
	for dg, rec := range idx.Images {
		for _, d := range rec.DiffIDs {
			if _, err := os.Stat(s.layerPath(d)); err != nil {
				s.logger.Warn("dropping image with missing layer", "digest", dg, "layer", d)
				delete(idx.Images, dg)
				changed = true
				break
			}
		}
	}
	if changed {
		if err := s.writeIndex(idx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Dir is the store's root directory.
func (s *Store) Dir() string { return s.dir }

func readIndex(p string) (*index, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return newIndex(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read image index: %w", err)
	}
	idx := newIndex()
	if err := json.Unmarshal(b, idx); err != nil {
		return nil, fmt.Errorf("parse image index %q: %w", p, err)
	}
	if idx.Format != indexFormat {
		return nil, fmt.Errorf("image index %q has format %d, want %d", p, idx.Format, indexFormat)
	}
	if idx.Images == nil {
		idx.Images = map[string]*imageRecord{}
	}
	if idx.Layers == nil {
		idx.Layers = map[string]*layerRecord{}
	}
	return idx, nil
}

// writeIndex replaces the index file atomically: temp file, fsync, rename,
// fsync of the directory. Callers hold s.mu.
func (s *Store) writeIndex(idx *index) error {
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return fmt.Errorf("encode image index: %w", err)
	}
	f, err := os.CreateTemp(s.dir, indexFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("write image index: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write image index: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync image index: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close image index: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, indexFile)); err != nil {
		return fmt.Errorf("replace image index: %w", err)
	}
	return syncDir(s.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %q for sync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %q: %w", dir, err)
	}
	return nil
}

// layerPath is the unpacked directory of a layer given its diff id.
func (s *Store) layerPath(diffID string) string {
	return filepath.Join(s.dir, layersDir, digestHex(diffID))
}

func digestHex(d string) string {
	_, hex, ok := strings.Cut(d, ":")
	if !ok {
		return d
	}
	return hex
}

// toImage builds the public view of a record. Callers hold s.mu.
func (s *Store) toImage(rec *imageRecord) Image {
	img := Image{
		References: slices.Clone(rec.References),
		Digest:     rec.Digest,
		ID:         rec.ID,
		Config:     rec.Config,
		DiffIDs:    slices.Clone(rec.DiffIDs),
		Created:    rec.Created,
		LastUsed:   rec.LastUsed,
	}
	img.Config.Entrypoint = slices.Clone(rec.Config.Entrypoint)
	img.Config.Cmd = slices.Clone(rec.Config.Cmd)
	img.Config.Env = slices.Clone(rec.Config.Env)
	img.Config.ExposedPorts = slices.Clone(rec.Config.ExposedPorts)
	img.Config.Labels = maps.Clone(rec.Config.Labels)
	for _, d := range rec.DiffIDs {
		img.Layers = append(img.Layers, s.layerPath(d))
		if l := s.idx.Layers[d]; l != nil {
			img.Size += l.Size
		}
	}
	return img
}

// normalizeRef parses a user reference into its fully qualified form.
func normalizeRef(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("%w: reference %q: %v", ErrInvalidArgument, ref, err)
	}
	return r, nil
}

// find resolves ref to a record. Callers hold s.mu.
func (s *Store) find(ref string) (*imageRecord, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return nil, fmt.Errorf("%w: empty image reference", ErrInvalidArgument)
	}
	// A digest or ID, or a prefix of one (at least 4 hex characters, as
	// short IDs go).
	if hex, ok := hexPrefix(ref); ok {
		var hits []*imageRecord
		for _, rec := range s.idx.Images {
			if strings.HasPrefix(digestHex(rec.Digest), hex) || strings.HasPrefix(digestHex(rec.ID), hex) {
				hits = append(hits, rec)
			}
		}
		switch len(hits) {
		case 1:
			return hits[0], nil
		case 0:
			// fall through: "abcd" may also be a repository name
		default:
			return nil, fmt.Errorf("%w: %q matches %d images", ErrAmbiguous, ref, len(hits))
		}
	}
	r, err := normalizeRef(ref)
	if err != nil {
		return nil, err
	}
	want := r.Name()
	for _, rec := range s.idx.Images {
		if slices.Contains(rec.References, want) {
			return rec, nil
		}
	}
	// name@digest of an image we know under another name (or none).
	if d, ok := r.(name.Digest); ok {
		if rec := s.idx.Images[d.DigestStr()]; rec != nil {
			return rec, nil
		}
	}
	return nil, fmt.Errorf("image %q: %w", ref, ErrNotFound)
}

// hexPrefix reports whether ref looks like a digest or a digest prefix and
// returns its hex part.
func hexPrefix(ref string) (string, bool) {
	hex := strings.TrimPrefix(ref, "sha256:")
	if len(hex) < 4 || len(hex) > 64 {
		return "", false
	}
	for _, c := range hex {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", false
		}
	}
	return hex, true
}

// Get finds an image by name[:tag], name@digest, or digest / ID (or an
// unambiguous prefix of either).
func (s *Store) Get(ref string) (Image, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := s.find(ref)
	if err != nil {
		return Image{}, false
	}
	return s.toImage(rec), true
}

// List returns all images, most recently used first.
func (s *Store) List() []Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Image, 0, len(s.idx.Images))
	for _, rec := range s.idx.Images {
		out = append(out, s.toImage(rec))
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].LastUsed.Equal(out[j].LastUsed) {
			return out[i].LastUsed.After(out[j].LastUsed)
		}
		return out[i].Digest < out[j].Digest
	})
	return out
}

// Remove drops a reference. By name:tag (or name@digest) only that
// reference goes; by digest or ID every reference of the image goes. Data
// is never deleted here: an image left without references is dangling and
// GC removes it (and its layers) once no task uses it, so Remove can never
// pull a rootfs from under a running container.
func (s *Store) Remove(ref string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := s.find(ref)
	if err != nil {
		return err
	}
	next := s.idx.clone()
	nrec := next.Images[rec.Digest]
	if _, isHex := hexPrefix(strings.TrimSpace(ref)); isHex && !s.isReference(rec, ref) {
		nrec.References = nil
	} else {
		r, err := normalizeRef(ref)
		if err != nil {
			return err
		}
		nrec.References = slices.DeleteFunc(nrec.References, func(x string) bool { return x == r.Name() })
	}
	if err := s.writeIndex(next); err != nil {
		return err
	}
	s.idx = next
	s.logger.Info("image reference removed", "ref", ref, "digest", rec.Digest, "remaining_refs", len(nrec.References))
	return nil
}

func (s *Store) isReference(rec *imageRecord, ref string) bool {
	r, err := name.ParseReference(ref)
	return err == nil && slices.Contains(rec.References, r.Name())
}

// MarkUsed records that an image was just used (a task started from it);
// the time shows in Image.LastUsed.
func (s *Store) MarkUsed(ref string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := s.find(ref)
	if err != nil {
		return err
	}
	next := s.idx.clone()
	next.Images[rec.Digest].LastUsed = time.Now().UTC()
	if err := s.writeIndex(next); err != nil {
		return err
	}
	s.idx = next
	return nil
}

// LowerDirs returns img's layer directories in overlayfs lowerdir order:
// the top layer first.
func (s *Store) LowerDirs(img Image) []string {
	out := slices.Clone(img.Layers)
	slices.Reverse(out)
	return out
}

// maxMountData is the limit on the data string of mount(2): the kernel
// copies it into a single page, so lowerdir lists of images with many
// layers (or long paths) can overflow it. The page is 4096 bytes on the
// machines we run on; the last byte is the terminating NUL.
const maxMountData = 4096 - 1

// OverlayOptions builds the overlayfs mount data for the given lower dirs
// (top first, as LowerDirs returns them), upper and work dir. It fails if
// the string would not fit in the one page mount(2) accepts, or if a path
// contains a character overlayfs uses as a separator.
func OverlayOptions(lower []string, upper, work string) (string, error) {
	if len(lower) == 0 {
		return "", fmt.Errorf("%w: overlay needs at least one lower dir", ErrInvalidArgument)
	}
	for _, p := range append(slices.Clone(lower), upper, work) {
		if strings.ContainsAny(p, ":,") {
			return "", fmt.Errorf("%w: overlay path %q contains ':' or ','", ErrInvalidArgument, p)
		}
	}
	opts := "lowerdir=" + strings.Join(lower, ":")
	if upper != "" {
		if work == "" {
			return "", fmt.Errorf("%w: overlay upper dir needs a work dir", ErrInvalidArgument)
		}
		opts += ",upperdir=" + upper + ",workdir=" + work
	}
	if len(opts) > maxMountData {
		return "", fmt.Errorf("%w: overlay mount options are %d bytes, over the %d-byte page limit (%d layers); use shorter paths or fewer layers",
			ErrInvalidArgument, len(opts), maxMountData, len(lower))
	}
	return opts, nil
}
