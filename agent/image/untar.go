package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Whiteout names from the OCI image spec ("Representing Changes").
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"

	// overlayOpaqueXattr marks a directory whose lower-layer contents are
	// hidden. Only overlayfs (mounted by root) reads trusted.* xattrs.
	overlayOpaqueXattr = "trusted.overlay.opaque"
)

// errUnsafe is wrapped by every refusal of a hostile or malformed entry, so
// callers (and tests) can tell an unsafe archive from an I/O failure.
var errUnsafe = errors.New("unsafe tar entry")

// ErrLimit is wrapped by the refusal of a layer that unpacks to more than
// the node's limits allow (a gzip or sparse-file bomb, or just too big),
// and of an image whose config is larger than maxConfigBytes or that has
// more than maxLayers layers.
var ErrLimit = errors.New("image exceeds a limit")

// Limits bound what one layer may unpack to. A layer past either is
// refused, and what was unpacked of it is removed.
type Limits struct {
	// MaxLayerBytes bounds the sum of a layer's regular file contents
	// (holes of sparse files included: they are written out). Default
	// DefaultMaxLayerBytes.
	MaxLayerBytes int64
	// MaxLayerEntries bounds the entries of a layer, directories created
	// for entries whose parents the archive does not list included.
	// Default DefaultMaxLayerEntries.
	MaxLayerEntries int
}

// Generous defaults: the largest public images have layers of a few GiB
// and a few hundred thousand files.
const (
	DefaultMaxLayerBytes   = 16 << 30
	DefaultMaxLayerEntries = 1_000_000
)

// maxConfigBytes bounds an image's config blob, which is read into memory
// whole: real ones are a few KiB (a long history makes tens of KiB).
const maxConfigBytes = 4 << 20

// maxLayers bounds the layers of an image, so that the per-layer Limits
// bound the whole image: 128, as docker's overlay2 driver allows (the
// kernel mounts no more lower dirs than about 500 anyway).
const maxLayers = 128

func (l Limits) withDefaults() Limits {
	if l.MaxLayerBytes <= 0 {
		l.MaxLayerBytes = DefaultMaxLayerBytes
	}
	if l.MaxLayerEntries <= 0 {
		l.MaxLayerEntries = DefaultMaxLayerEntries
	}
	return l
}

// untarStats is what an unpack reports.
type untarStats struct {
	Entries int   // archive entries plus parent directories created for them
	Bytes   int64 // sum of regular file contents
}

// untar unpacks the tar stream r into root, an existing empty directory.
//
// The rules, and why:
//   - Names are cleaned; a name that still climbs out (../x) is refused.
//     A leading "/" is dropped, as docker and containerd do: the name is
//     then taken relative to root.
//   - Every parent directory is opened component by component with
//     O_NOFOLLOW|O_DIRECTORY (openat walk), so a symlink planted by an
//     earlier entry can never redirect a later write outside root: such an
//     entry is refused. Missing parents are created (0755) and get their
//     real metadata when their own entry comes later.
//   - Files are created with O_EXCL|O_NOFOLLOW relative to the parent fd;
//     an existing entry of that name is unlinked first (later entries win,
//     as in tar).
//   - Symlink targets are stored verbatim: they are never followed here, and
//     at run time they resolve inside the container's root.
//   - Hardlink targets are taken relative to root (a leading "/" included);
//     a target that climbs out is refused, and the target's parents are
//     walked with the same no-symlink rule.
//   - ".wh.NAME" becomes a 0/0 character device NAME, ".wh..wh..opq" sets
//     trusted.overlay.opaque=y on its directory: the overlayfs encoding.
//     trusted.overlay.* xattrs carried by the archive itself are dropped, so
//     an image cannot smuggle in redirects or metacopy flags.
//   - Block and character devices are refused, except 0/0 character
//     devices: those are overlayfs whiteouts, as layers exported from an
//     overlayfs store carry them. An image has no business creating device
//     nodes (a block device of the host's disk would be a way out of the
//     container); a container gets its /dev from the runtime. Fifos are
//     kept, as docker keeps them: a named pipe reaches nothing the
//     container could not make with mkfifo itself.
//   - At most lim.MaxLayerBytes of file contents and lim.MaxLayerEntries
//     entries are unpacked: a bomb (a few KB of gzip that inflate to
//     terabytes, a sparse file with a huge hole, millions of empty files)
//     is refused with ErrLimit rather than filling the disk.
//   - uid/gid (lchown), mode including setuid/setgid/sticky (chmod after
//     chown, which clears setuid), xattrs and mtimes are kept. Directory
//     mtimes are applied at the end, since creating their contents changes
//     them.
func untar(ctx context.Context, root string, r io.Reader, logger *slog.Logger, lim Limits) (untarStats, error) {
	var st untarStats
	lim = lim.withDefaults()
	u := &untarrer{root: root, logger: logger, isRoot: os.Geteuid() == 0, lim: lim}
	rootFd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return st, fmt.Errorf("open unpack root %q: %w", root, err)
	}
	defer unix.Close(rootFd)
	u.rootFd = rootFd

	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, fmt.Errorf("read tar header after %d entries: %w", st.Entries, err)
		}
		st.Entries++
		if st.Entries+u.parents > lim.MaxLayerEntries {
			return st, fmt.Errorf("%w: more than %d entries (node setting --max-layer-entries)", ErrLimit, lim.MaxLayerEntries)
		}
		u.budget = lim.MaxLayerBytes - st.Bytes
		n, err := u.entry(hdr, tr)
		if err != nil {
			return st, fmt.Errorf("tar entry %q: %w", hdr.Name, err)
		}
		st.Bytes += n
	}
	st.Entries += u.parents
	if err := u.finishDirs(); err != nil {
		return st, err
	}
	return st, nil
}

type dirTimes struct {
	rel          string
	atime, mtime time.Time
}

type untarrer struct {
	root   string
	rootFd int
	logger *slog.Logger
	isRoot bool
	dirs   []dirTimes
	lim    Limits
	// parents counts the directories created for entries whose parents
	// the archive did not list: one entry with a deep name would
	// otherwise make thousands of directories for one count.
	parents int
	// budget is how many bytes of file contents the current entry may
	// still write.
	budget int64
}

// cleanName turns a tar name into a root-relative slash path ("." for the
// root itself), refusing names that climb out.
func cleanName(name string) (string, error) {
	name = strings.TrimLeft(name, "/")
	if name == "" {
		return ".", nil
	}
	c := path.Clean(name)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("%w: path %q escapes the root", errUnsafe, name)
	}
	return c, nil
}

// openParent walks the parent directories of rel from the root without
// following symlinks, creating missing ones. It returns an fd of the parent
// (to be closed by the caller) and the base name.
func (u *untarrer) openParent(rel string, create bool) (int, string, error) {
	dir, base := path.Split(rel)
	fd, err := unix.Dup(u.rootFd)
	if err != nil {
		return -1, "", fmt.Errorf("dup root fd: %w", err)
	}
	walked := ""
	for _, comp := range strings.Split(strings.TrimSuffix(dir, "/"), "/") {
		if comp == "" || comp == "." {
			continue
		}
		walked = path.Join(walked, comp)
		next, err := openDirNoFollow(fd, comp)
		if errors.Is(err, unix.ENOENT) && create {
			if u.parents++; u.parents > u.lim.MaxLayerEntries {
				unix.Close(fd)
				return -1, "", fmt.Errorf("%w: more than %d entries, counting the parent directories made for them (node setting --max-layer-entries)", ErrLimit, u.lim.MaxLayerEntries)
			}
			if err := unix.Mkdirat(fd, comp, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
				unix.Close(fd)
				return -1, "", fmt.Errorf("create parent %q: %w", walked, err)
			}
			next, err = openDirNoFollow(fd, comp)
		}
		unix.Close(fd)
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return -1, "", fmt.Errorf("%w: parent %q is a symlink or not a directory", errUnsafe, walked)
		}
		if err != nil {
			return -1, "", fmt.Errorf("open parent %q: %w", walked, err)
		}
		fd = next
	}
	return fd, base, nil
}

func openDirNoFollow(dirfd int, name string) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return fd, err
	}
}

// clearName removes whatever exists at parent/base unless keepDir is set
// and it is a directory (a directory entry over an existing directory only
// updates its metadata). It reports whether a directory was kept.
func (u *untarrer) clearName(pfd int, base, rel string, keepDir bool) (bool, error) {
	var st unix.Stat_t
	err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat existing: %w", err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if keepDir {
			return true, nil
		}
		// The parents were walked without symlinks and nobody else writes
		// to an unpack dir, so the path-based RemoveAll stays inside root.
		if err := os.RemoveAll(filepath.Join(u.root, filepath.FromSlash(rel))); err != nil {
			return false, fmt.Errorf("replace existing directory: %w", err)
		}
		return false, nil
	}
	if err := unix.Unlinkat(pfd, base, 0); err != nil {
		return false, fmt.Errorf("replace existing entry: %w", err)
	}
	return false, nil
}

func (u *untarrer) entry(hdr *tar.Header, r io.Reader) (int64, error) {
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return 0, err
	}
	if rel == "." {
		if hdr.Typeflag != tar.TypeDir {
			return 0, fmt.Errorf("%w: root entry is not a directory", errUnsafe)
		}
		if err := u.setMeta(u.rootFd, ".", hdr, false); err != nil {
			return 0, err
		}
		u.dirs = append(u.dirs, dirTimes{rel: ".", atime: hdr.AccessTime, mtime: hdr.ModTime})
		return 0, nil
	}

	pfd, base, err := u.openParent(rel, true)
	if err != nil {
		return 0, err
	}
	defer unix.Close(pfd)

	// Whiteouts.
	if strings.HasPrefix(base, whiteoutPrefix) {
		switch {
		case base == whiteoutOpaque:
			if err := unix.Fsetxattr(pfd, overlayOpaqueXattr, []byte("y"), 0); err != nil {
				return 0, fmt.Errorf("mark opaque directory: %w", err)
			}
			return 0, nil
		case strings.HasPrefix(base, whiteoutMeta):
			// Other .wh..wh. names are aufs bookkeeping (e.g. .wh..wh.plnk);
			// they carry nothing for overlayfs.
			return 0, nil
		default:
			name := strings.TrimPrefix(base, whiteoutPrefix)
			if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
				return 0, fmt.Errorf("%w: bad whiteout name %q", errUnsafe, base)
			}
			if _, err := u.clearName(pfd, name, path.Join(path.Dir(rel), name), false); err != nil {
				return 0, err
			}
			if err := unix.Mknodat(pfd, name, unix.S_IFCHR, 0); err != nil {
				return 0, fmt.Errorf("create whiteout for %q: %w", name, err)
			}
			return 0, nil
		}
	}

	var n int64
	switch hdr.Typeflag {
	case tar.TypeDir:
		kept, err := u.clearName(pfd, base, rel, true)
		if err != nil {
			return 0, err
		}
		if !kept {
			if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
				return 0, fmt.Errorf("mkdir: %w", err)
			}
		}
		u.dirs = append(u.dirs, dirTimes{rel: rel, atime: hdr.AccessTime, mtime: hdr.ModTime})
		if err := u.setMeta(pfd, base, hdr, false); err != nil {
			return 0, err
		}
		return 0, nil

	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		if _, err := u.clearName(pfd, base, rel, false); err != nil {
			return 0, err
		}
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return 0, fmt.Errorf("create file: %w", err)
		}
		f := os.NewFile(uintptr(fd), rel)
		// The header's size is what the archive claims; the copy is
		// bounded by the budget whatever it claims, one byte past it
		// telling "too big" from "exactly at the limit".
		if hdr.Size > u.budget {
			f.Close()
			return 0, u.tooBig()
		}
		n, err = io.Copy(f, io.LimitReader(r, u.budget+1))
		if err != nil {
			f.Close()
			return 0, fmt.Errorf("write file: %w", err)
		}
		if n > u.budget {
			f.Close()
			return 0, u.tooBig()
		}
		if err := f.Close(); err != nil {
			return 0, fmt.Errorf("close file: %w", err)
		}

	case tar.TypeSymlink:
		if hdr.Linkname == "" {
			return 0, fmt.Errorf("%w: empty symlink target", errUnsafe)
		}
		if _, err := u.clearName(pfd, base, rel, false); err != nil {
			return 0, err
		}
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return 0, fmt.Errorf("symlink: %w", err)
		}

	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil {
			return 0, fmt.Errorf("hardlink target: %w", err)
		}
		if target == "." {
			return 0, fmt.Errorf("%w: hardlink to the root", errUnsafe)
		}
		if target == rel {
			return 0, nil // a link to itself: nothing to do
		}
		tfd, tbase, err := u.openParent(target, false)
		if err != nil {
			return 0, fmt.Errorf("hardlink target %q: %w", hdr.Linkname, err)
		}
		defer unix.Close(tfd)
		if _, err := u.clearName(pfd, base, rel, false); err != nil {
			return 0, err
		}
		// flags 0: link the target entry itself, never what it points to.
		if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
			return 0, fmt.Errorf("hardlink to %q: %w", hdr.Linkname, err)
		}
		// A hardlink shares the target's inode and metadata; nothing more.
		return 0, nil

	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		whiteout := hdr.Typeflag == tar.TypeChar && hdr.Devmajor == 0 && hdr.Devminor == 0
		if hdr.Typeflag != tar.TypeFifo && !whiteout {
			kind := "character"
			if hdr.Typeflag == tar.TypeBlock {
				kind = "block"
			}
			return 0, fmt.Errorf("%w: %s device %d:%d (an image may not create device nodes)", errUnsafe, kind, hdr.Devmajor, hdr.Devminor)
		}
		if _, err := u.clearName(pfd, base, rel, false); err != nil {
			return 0, err
		}
		mode := uint32(hdr.Mode&0o7777) | unix.S_IFIFO
		if whiteout {
			mode = uint32(hdr.Mode&0o7777) | unix.S_IFCHR
		}
		if err := unix.Mknodat(pfd, base, mode, 0); err != nil {
			return 0, fmt.Errorf("mknod: %w", err)
		}

	case tar.TypeXGlobalHeader:
		return 0, nil

	default:
		u.logger.Debug("skipping unsupported tar entry", "name", hdr.Name, "type", string(hdr.Typeflag))
		return 0, nil
	}

	if err := u.setMeta(pfd, base, hdr, hdr.Typeflag == tar.TypeSymlink); err != nil {
		return 0, err
	}
	if err := unix.UtimesNanoAt(pfd, base, timespecs(hdr.AccessTime, hdr.ModTime), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return 0, fmt.Errorf("set times: %w", err)
	}
	return n, nil
}

func (u *untarrer) tooBig() error {
	return fmt.Errorf("%w: more than %d bytes of file contents (node setting --max-layer-bytes)", ErrLimit, u.lim.MaxLayerBytes)
}

// setMeta applies ownership, mode and xattrs to pfd/base (never following
// a symlink at base).
func (u *untarrer) setMeta(pfd int, base string, hdr *tar.Header, isSymlink bool) error {
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if u.isRoot || !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("chown %d:%d: %w", hdr.Uid, hdr.Gid, err)
		}
	}
	if !isSymlink {
		// Linux has no lchmod; base is known not to be a symlink here.
		if err := unix.Fchmodat(pfd, base, uint32(hdr.Mode&0o7777), 0); err != nil {
			return fmt.Errorf("chmod %o: %w", hdr.Mode&0o7777, err)
		}
	}
	for key, val := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(key, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if strings.HasPrefix(name, "trusted.overlay.") {
			u.logger.Debug("dropping overlay xattr from archive", "name", hdr.Name, "xattr", name)
			continue
		}
		full := filepath.Join(u.root, filepath.FromSlash(mustRel(hdr.Name)))
		if err := unix.Lsetxattr(full, name, []byte(val), 0); err != nil {
			// Keep xattrs "where possible": some filesystems or namespaces
			// refuse some classes (e.g. security.* without privilege).
			u.logger.Debug("could not set xattr", "name", hdr.Name, "xattr", name, "err", err)
		}
	}
	return nil
}

// mustRel is cleanName for a name already accepted.
func mustRel(name string) string {
	rel, err := cleanName(name)
	if err != nil {
		return "."
	}
	return rel
}

func (u *untarrer) finishDirs() error {
	for i := len(u.dirs) - 1; i >= 0; i-- {
		d := u.dirs[i]
		var err error
		if d.rel == "." {
			err = unix.UtimesNanoAt(u.rootFd, ".", timespecs(d.atime, d.mtime), 0)
		} else {
			var pfd int
			var base string
			pfd, base, err = u.openParent(d.rel, false)
			if err == nil {
				err = unix.UtimesNanoAt(pfd, base, timespecs(d.atime, d.mtime), unix.AT_SYMLINK_NOFOLLOW)
				unix.Close(pfd)
			}
		}
		// A later entry may have replaced the directory; that is fine.
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, errUnsafe) {
			return fmt.Errorf("set times on directory %q: %w", d.rel, err)
		}
	}
	return nil
}

func timespecs(atime, mtime time.Time) []unix.Timespec {
	if atime.IsZero() {
		atime = mtime
	}
	return []unix.Timespec{timespec(atime), timespec(mtime)}
}

// timespec leaves a time unset in the archive untouched (UTIME_OMIT)
// rather than writing the year-1 zero time.
func timespec(t time.Time) unix.Timespec {
	if t.IsZero() {
		return unix.Timespec{Nsec: unix.UTIME_OMIT}
	}
	return unix.NsecToTimespec(t.UnixNano())
}
