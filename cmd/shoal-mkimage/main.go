// Command shoal-mkimage packages a static binary (normally shoal-demo), or a
// whole directory tree (a Debian root made by scripts/debian-image.sh), as a
// one-layer container image, in pure Go with go-containerregistry.
//
// Usage:
//
//	shoal-mkimage (--binary PATH | --rootfs DIR) --out PATH [--name demo:latest]
//	    [--entrypoint /shoal-demo] [--cmd serve]... [--env K=V]...
//	    [--stop-signal SIG] [--user U[:G]] [--workdir DIR]
//	    [--format oci-archive|oci-layout|docker] [--arch GOARCH]
//
// For example, to build the demo image in one go:
//
//	CGO_ENABLED=0 go build -o bin/shoal-demo ./cmd/shoal-demo &&
//	    go run ./cmd/shoal-mkimage --binary bin/shoal-demo --out bin/demo.oci.tar
//
// The layer holds the binary at /shoal-demo (0755, 0:0) and a minimal tree:
// /tmp (1777), /etc/passwd (root, nobody 65534), /etc/group, an empty
// /etc/hosts, and empty /dev, /proc and /sys. The config has the given
// Entrypoint (an empty string for none) and Cmd (--cmd repeats to add
// arguments; default "serve"), Env PATH=/ plus each --env, WorkingDir /,
// os linux and arch --arch (default: the binary's ELF machine, else the
// GOARCH of this tool).
//
// With --rootfs the layer is the tree under DIR as it is on disk: modes
// (setuid, setgid, sticky included), numeric owners, symlinks and hardlinks
// are kept; only mtimes are fixed. Device nodes, FIFOs and sockets are left
// out with a warning (the runtime provides /dev; an agent refuses device
// entries). Extended attributes (file capabilities) are not carried. The
// defaults change with it: no Entrypoint, no Cmd, and Env PATH is Debian's
// usual /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; --arch
// defaults to the GOARCH of this tool.
//
// --stop-signal, --user and --workdir set the config's StopSignal, User and
// WorkingDir (default "/"); Shoal stops a task with the image's StopSignal
// unless the service sets one.
//
// --healthcheck sets the config's HEALTHCHECK (a JSON array: the exec
// form; NONE; else a shell line) with --health-interval, --health-timeout,
// --health-start-period and --health-retries; agents honour it unless a
// service sets its own check or --no-healthcheck.
//
// Formats: oci-archive (default) is a tar of an OCI image layout;
// oci-layout writes (or updates, replacing an image of the same name) an
// OCI layout directory; docker is a `docker load` tarball. In the OCI
// forms the index entry carries the annotation
// org.opencontainers.image.ref.name = --name (a missing tag becomes
// ":latest").
//
// The output is deterministic: fixed timestamps (1970-01-01, or
// $SOURCE_DATE_EPOCH), sorted entries, fixed owners (for --rootfs: the
// tree's numeric owners, no names). The same binary (or tree) and flags give
// the same manifest digest, which is printed on stdout.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// BinaryPath is where the binary lives in the image.
const BinaryPath = "/shoal-demo"

// Options describe one image to build.
type Options struct {
	Binary     string   // path of the binary on this machine
	Rootfs     string   // or: a directory whose tree is the layer
	Name       string   // image name, e.g. demo:latest
	Entrypoint string   // "" for none
	Cmd        []string // nil for none
	Env        []string // K=V, added after PATH=/
	StopSignal string   // config StopSignal, e.g. SIGQUIT; "" for none
	User       string   // config User; "" for none (root)
	WorkDir    string   // config WorkingDir; "" for /
	// Healthcheck is the config's HEALTHCHECK test ({"CMD", args...},
	// {"CMD-SHELL", line} or {"NONE"}); nil for none. Health* are its
	// timings (0: the runtime's defaults).
	Healthcheck       []string
	HealthInterval    time.Duration
	HealthTimeout     time.Duration
	HealthStartPeriod time.Duration
	HealthRetries     int
	Format            string // oci-archive, oci-layout or docker
	Arch              string // "" to detect
	Out               string
	Created           time.Time // every timestamp in the image
	Warn              io.Writer // warnings (e.g. a dynamically linked binary); nil: discard
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	var o Options
	var cmd, env listFlag
	fs := flag.NewFlagSet("shoal-mkimage", flag.ContinueOnError)
	fs.StringVar(&o.Binary, "binary", "", "static binary to package (this or --rootfs)")
	fs.StringVar(&o.Rootfs, "rootfs", "", "directory tree to package as the one layer (this or --binary)")
	fs.StringVar(&o.Name, "name", "demo:latest", "image name (ref.name annotation, docker tag)")
	fs.StringVar(&o.Entrypoint, "entrypoint", BinaryPath, "entrypoint (empty for none; default none with --rootfs)")
	fs.Var(&cmd, "cmd", "a Cmd argument; repeat for more (default serve; none with --rootfs)")
	fs.Var(&env, "env", "K=V added to the environment; repeatable")
	fs.StringVar(&o.StopSignal, "stop-signal", "", "config StopSignal, e.g. SIGQUIT (default: none, the runtime's SIGTERM)")
	fs.StringVar(&o.User, "user", "", "config User: NAME, UID or UID:GID (default root)")
	fs.StringVar(&o.WorkDir, "workdir", "", "config WorkingDir, absolute (default /)")
	var healthcheck string
	fs.StringVar(&healthcheck, "healthcheck", "", `config HEALTHCHECK: a JSON array is the exec form ('["/shoal-demo","fetch","http://127.0.0.1:8080/health"]'), NONE disables, anything else is a shell line`)
	fs.DurationVar(&o.HealthInterval, "health-interval", 0, "HEALTHCHECK interval (default: the runtime's)")
	fs.DurationVar(&o.HealthTimeout, "health-timeout", 0, "HEALTHCHECK timeout (default: the runtime's)")
	fs.DurationVar(&o.HealthStartPeriod, "health-start-period", 0, "HEALTHCHECK start period (default: the runtime's)")
	fs.IntVar(&o.HealthRetries, "health-retries", 0, "HEALTHCHECK retries (default: the runtime's)")
	fs.StringVar(&o.Format, "format", "oci-archive", "oci-archive, oci-layout or docker")
	fs.StringVar(&o.Arch, "arch", "", "image architecture (default: from the binary, else "+runtime.GOARCH+")")
	fs.StringVar(&o.Out, "out", "", "output file (directory for oci-layout) (required)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if (o.Binary == "") == (o.Rootfs == "") || o.Out == "" || fs.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "shoal-mkimage: one of --binary and --rootfs, and --out, are required, and no arguments")
		fs.Usage()
		os.Exit(2)
	}
	o.Cmd, o.Env, o.Warn = cmd, env, os.Stderr
	if healthcheck != "" {
		var err error
		if o.Healthcheck, err = ParseHealthcheck(healthcheck); err != nil {
			fmt.Fprintln(os.Stderr, "shoal-mkimage:", err)
			os.Exit(2)
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.Rootfs == "" && cmd == nil {
		o.Cmd = []string{"serve"}
	}
	if o.Rootfs != "" && !set["entrypoint"] {
		o.Entrypoint = ""
	}
	o.Created = time.Unix(0, 0).UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			fmt.Fprintln(os.Stderr, "shoal-mkimage: bad SOURCE_DATE_EPOCH:", err)
			os.Exit(2)
		}
		o.Created = time.Unix(sec, 0).UTC()
	}
	digest, err := Build(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "shoal-mkimage:", err)
		os.Exit(1)
	}
	fmt.Println(digest)
}

// Build writes the image described by o to o.Out and returns its manifest
// digest.
func Build(o Options) (v1.Hash, error) {
	if o.Warn == nil {
		o.Warn = io.Discard
	}
	ref, err := imageName(o.Name)
	if err != nil {
		return v1.Hash{}, err
	}
	var bin []byte
	if o.Binary != "" && o.Rootfs != "" {
		return v1.Hash{}, fmt.Errorf("--binary and --rootfs are exclusive")
	}
	if o.Rootfs == "" {
		if bin, err = os.ReadFile(o.Binary); err != nil {
			return v1.Hash{}, err
		}
	}
	if o.Arch == "" {
		o.Arch = runtime.GOARCH
		if bin != nil {
			o.Arch = binaryArch(bin, o.Warn)
		}
	}
	oci := o.Format != "docker"
	img, err := Image(bin, o, oci)
	if err != nil {
		return v1.Hash{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	switch o.Format {
	case "oci-layout":
		err = writeLayout(o.Out, img, ref, o.Arch)
	case "oci-archive":
		err = writeAtomic(o.Out, func(w io.Writer) error {
			tmp, err := os.MkdirTemp("", "shoal-mkimage-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			if err := writeLayout(tmp, img, ref, o.Arch); err != nil {
				return err
			}
			return tarDir(w, tmp, o.Created)
		})
	case "docker":
		tag, err2 := name.NewTag(ref)
		if err2 != nil {
			return v1.Hash{}, err2
		}
		err = writeAtomic(o.Out, func(w io.Writer) error { return tarball.Write(tag, img, w) })
	default:
		err = fmt.Errorf("unknown format %q (want oci-archive, oci-layout or docker)", o.Format)
	}
	if err != nil {
		return v1.Hash{}, err
	}
	return digest, nil
}

// imageName checks s and adds ":latest" when it has no tag.
func imageName(s string) (string, error) {
	if i := strings.LastIndex(s, "/"); !strings.Contains(s[i+1:], ":") {
		s += ":latest"
	}
	if strings.Contains(s, "@") {
		return "", fmt.Errorf("bad image name %q: want NAME[:TAG], no digest", s)
	}
	if _, err := name.NewTag(s); err != nil {
		return "", fmt.Errorf("bad image name %q: %w", s, err)
	}
	return s, nil
}

// binaryArch returns the GOARCH of an ELF binary, warning about anything
// that will not run as a static binary in a bare image.
func binaryArch(bin []byte, warn io.Writer) string {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		fmt.Fprintf(warn, "shoal-mkimage: warning: binary is not ELF (%v); arch %s\n", err, runtime.GOARCH)
		return runtime.GOARCH
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			fmt.Fprintln(warn, "shoal-mkimage: warning: binary is dynamically linked; build it with CGO_ENABLED=0")
		}
	}
	arch := map[elf.Machine]string{
		elf.EM_X86_64: "amd64", elf.EM_AARCH64: "arm64", elf.EM_386: "386",
		elf.EM_ARM: "arm", elf.EM_RISCV: "riscv64", elf.EM_PPC64: "ppc64le",
		elf.EM_S390: "s390x", elf.EM_LOONGARCH: "loong64",
	}[f.Machine]
	if arch == "" {
		return runtime.GOARCH
	}
	return arch
}

// DefaultPath is the PATH of a --rootfs image, as in Debian's own images.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Image builds the image in memory: OCI media types if oci, else Docker's.
// The layer is bin at BinaryPath, or the tree at o.Rootfs when set.
func Image(bin []byte, o Options, oci bool) (v1.Image, error) {
	if err := checkConfig(o); err != nil {
		return nil, err
	}
	var layerBytes []byte
	var err error
	comment, path := "binary at "+BinaryPath, "PATH=/"
	if o.Rootfs != "" {
		comment, path = "directory tree", DefaultPath
		layerBytes, err = RootfsLayerTar(o.Rootfs, o.Created, o.Warn)
	} else {
		layerBytes, err = LayerTar(bin, o.Created)
	}
	if err != nil {
		return nil, err
	}
	manifestType, configType, layerType := types.DockerManifestSchema2, types.DockerConfigJSON, types.DockerLayer
	if oci {
		manifestType, configType, layerType = types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	}, tarball.WithMediaType(layerType))
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: o.Created}
	img := mutate.MediaType(empty.Image, manifestType)
	img = mutate.ConfigMediaType(img, configType)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: layerType,
		History:   v1.History{Created: created, CreatedBy: "shoal-mkimage", Comment: comment},
	})
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Created = created
	cfg.OS = "linux"
	cfg.Architecture = o.Arch
	cfg.Config.WorkingDir = "/"
	if o.WorkDir != "" {
		cfg.Config.WorkingDir = o.WorkDir
	}
	cfg.Config.User = o.User
	if o.StopSignal != "" {
		cfg.Config.StopSignal, _ = ParseSignal(o.StopSignal) // checked above
	}
	cfg.Config.Env = []string{path}
	for _, kv := range o.Env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("bad --env %q: want K=V", kv)
		}
		cfg.Config.Env = setEnv(cfg.Config.Env, kv)
	}
	cfg.Config.Entrypoint = nil
	if o.Entrypoint != "" {
		cfg.Config.Entrypoint = []string{o.Entrypoint}
	}
	cfg.Config.Cmd = o.Cmd
	if len(o.Healthcheck) > 0 {
		cfg.Config.Healthcheck = &v1.HealthConfig{Test: o.Healthcheck, Interval: o.HealthInterval, Timeout: o.HealthTimeout,
			StartPeriod: o.HealthStartPeriod, Retries: o.HealthRetries}
	}
	return mutate.ConfigFile(img, cfg)
}

// setEnv sets kv in env, replacing a variable of the same name.
func setEnv(env []string, kv string) []string {
	k, _, _ := strings.Cut(kv, "=")
	for i, e := range env {
		if ek, _, _ := strings.Cut(e, "="); ek == k {
			env[i] = kv
			return env
		}
	}
	return append(env, kv)
}

// LayerTar returns the gzipped layer tar: the binary and a minimal tree,
// sorted, owned by 0:0, every mtime set to mtime.
func LayerTar(bin []byte, mtime time.Time) ([]byte, error) {
	type entry struct {
		mode int64 // permission bits; dirs have a trailing / in the name
		data []byte
	}
	files := map[string]entry{
		"dev/":                              {0o755, nil},
		"etc/":                              {0o755, nil},
		"etc/group":                         {0o644, []byte("root:x:0:\nnogroup:x:65534:\n")},
		"etc/hosts":                         {0o644, nil},
		"etc/passwd":                        {0o644, []byte("root:x:0:0:root:/:/shoal-demo\nnobody:x:65534:65534:nobody:/:/shoal-demo\n")},
		"proc/":                             {0o555, nil},
		"sys/":                              {0o555, nil},
		"tmp/":                              {0o1777, nil},
		strings.TrimPrefix(BinaryPath, "/"): {0o755, bin},
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)

	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(gz)
	for _, n := range names {
		e := files[n]
		h := &tar.Header{
			Name: n, Mode: e.mode, Size: int64(len(e.data)), ModTime: mtime,
			Uname: "root", Gname: "root", Typeflag: tar.TypeReg, Format: tar.FormatPAX,
		}
		if strings.HasSuffix(n, "/") {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

const refNameAnnotation = "org.opencontainers.image.ref.name"

// writeLayout adds img to the OCI layout at dir (created if needed),
// replacing any image with the same ref.name.
func writeLayout(dir string, img v1.Image, ref, arch string) error {
	p, err := layout.FromPath(dir)
	if err != nil {
		if p, err = layout.Write(dir, empty.Index); err != nil {
			return err
		}
	}
	return p.ReplaceImage(img, match.Annotation(refNameAnnotation, ref),
		layout.WithAnnotations(map[string]string{refNameAnnotation: ref}),
		layout.WithPlatform(v1.Platform{OS: "linux", Architecture: arch}))
}

// tarDir writes the tree under dir as a tar, sorted, with fixed metadata.
func tarDir(w io.Writer, dir string, mtime time.Time) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: mtime, Mode: 0o644, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		var data []byte
		switch {
		case d.IsDir():
			h.Name += "/"
			h.Mode, h.Typeflag = 0o755, tar.TypeDir
		case d.Type().IsRegular():
			if data, err = os.ReadFile(path); err != nil {
				return err
			}
			h.Size = int64(len(data))
		default:
			return fmt.Errorf("unexpected file type in layout: %s", path)
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// writeAtomic writes a file through a temporary file and a rename.
func writeAtomic(path string, write func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// checkConfig refuses config values no runtime could use, before any work.
func checkConfig(o Options) error {
	if o.StopSignal != "" {
		if _, err := ParseSignal(o.StopSignal); err != nil {
			return fmt.Errorf("--stop-signal: %w", err)
		}
	}
	if h := o.Healthcheck; len(h) > 0 && !(h[0] == "NONE" && len(h) == 1 || h[0] == "CMD" && len(h) > 1 || h[0] == "CMD-SHELL" && len(h) == 2) {
		return fmt.Errorf("--healthcheck %q: want NONE, CMD with args or CMD-SHELL with one line", h)
	}
	if o.HealthInterval < 0 || o.HealthTimeout < 0 || o.HealthStartPeriod < 0 || o.HealthRetries < 0 {
		return fmt.Errorf("--health-*: negative values")
	}
	if o.User != "" && !userRE.MatchString(o.User) {
		return fmt.Errorf("--user %q: want NAME, UID, NAME:GROUP or UID:GID", o.User)
	}
	if w := o.WorkDir; w != "" && (!strings.HasPrefix(w, "/") || path.Clean(w) != w || strings.ContainsAny(w, "\x00\n")) {
		return fmt.Errorf("--workdir %q: want a clean absolute path", w)
	}
	return nil
}

// ParseHealthcheck reads --healthcheck into a config HEALTHCHECK test: a
// JSON array of strings is the exec form (CMD), NONE disables, anything
// else is a shell line (CMD-SHELL), as a Dockerfile's HEALTHCHECK.
func ParseHealthcheck(v string) ([]string, error) {
	switch t := strings.TrimSpace(v); {
	case t == "NONE":
		return []string{"NONE"}, nil
	case strings.HasPrefix(t, "["):
		var argv []string
		if err := json.Unmarshal([]byte(t), &argv); err != nil || len(argv) == 0 {
			return nil, fmt.Errorf("--healthcheck %q: want a JSON array of strings", v)
		}
		return append([]string{"CMD"}, argv...), nil
	case t == "":
		return nil, fmt.Errorf("--healthcheck: empty")
	default:
		return []string{"CMD-SHELL", v}, nil
	}
}

var userRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$`)

// ParseSignal accepts SIGQUIT, QUIT or sigquit (and RTMIN+n forms are not
// supported) and returns the canonical name: what the OCI image spec and
// docker write in StopSignal.
func ParseSignal(s string) (string, error) {
	n := strings.ToUpper(s)
	if !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	if unix.SignalNum(n) == 0 {
		return "", fmt.Errorf("unknown signal %q (want a name such as SIGQUIT)", s)
	}
	return n, nil
}

// RootfsLayerTar returns the gzipped tar of the tree under dir: entries in
// walk order (each directory's children sorted by name), numeric owners
// without names, permission and setuid/setgid/sticky bits as on disk,
// symlinks as symlinks, a second name of the same inode as a hardlink to the
// first, every mtime set to mtime. Device nodes, FIFOs and sockets are
// skipped with a warning; a name that an image unpacker would read as a
// whiteout (.wh.*) is refused.
func RootfsLayerTar(dir string, mtime time.Time, warn io.Writer) ([]byte, error) {
	if warn == nil {
		warn = io.Discard
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("--rootfs %s: not a directory", dir)
	}
	type inode struct{ dev, ino uint64 }
	links := map[inode]string{}
	var skipped []string

	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	tw := tar.NewWriter(gz)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if strings.HasPrefix(d.Name(), ".wh.") {
			return fmt.Errorf("--rootfs: %s: a name starting with .wh. is a whiteout in an image layer", name)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("--rootfs: %s: no owner information", name)
		}
		m := fi.Mode()
		h := &tar.Header{
			Name: name, ModTime: mtime, Uid: int(st.Uid), Gid: int(st.Gid),
			Mode: int64(m.Perm()), Format: tar.FormatPAX,
		}
		if m&fs.ModeSetuid != 0 {
			h.Mode |= 0o4000
		}
		if m&fs.ModeSetgid != 0 {
			h.Mode |= 0o2000
		}
		if m&fs.ModeSticky != 0 {
			h.Mode |= 0o1000
		}
		var src string // regular file to copy
		switch {
		case m.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, name+"/"
		case m&fs.ModeSymlink != 0:
			h.Typeflag = tar.TypeSymlink
			if h.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
		case m.IsRegular():
			id := inode{uint64(st.Dev), uint64(st.Ino)}
			if first, ok := links[id]; ok && st.Nlink > 1 {
				h.Typeflag, h.Linkname = tar.TypeLink, first
				break
			}
			if st.Nlink > 1 {
				links[id] = name
			}
			h.Typeflag, h.Size, src = tar.TypeReg, fi.Size(), p
		default: // device, FIFO, socket
			skipped = append(skipped, name)
			return nil
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("--rootfs: %s: %w", name, err)
		}
		if src == "" {
			return nil
		}
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		if n, err := io.Copy(tw, f); err != nil {
			return fmt.Errorf("--rootfs: %s: %w", name, err)
		} else if n != h.Size {
			return fmt.Errorf("--rootfs: %s changed while packaging it", name)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(skipped) > 0 {
		more := ""
		if len(skipped) > 8 {
			more = fmt.Sprintf(" and %d more", len(skipped)-8)
			skipped = skipped[:8]
		}
		fmt.Fprintf(warn, "shoal-mkimage: warning: left out %s%s: device nodes, FIFOs and sockets do not belong in a layer (the runtime provides /dev)\n",
			strings.Join(skipped, ", "), more)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
