package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/shoal-dev/shoal/agent/image"
)

const (
	// resolveTimeout bounds the registry lookup of `service create/update`:
	// a registry that answers at all does so well within it (a HEAD, with
	// a token round trip at most), and one that does not (no internet,
	// DNS that never answers) must not hold the command up for long.
	resolveTimeout = 1500 * time.Millisecond
	// silentFor is how long a registry that did not answer is not asked
	// again: an air-gapped cluster pays resolveTimeout once, not on every
	// command.
	silentFor = 5 * time.Minute
	// silentFile, in the CLI's cache dir, maps a registry host to the time
	// it last failed to answer.
	silentFile = "registries-silent.json"
)

// pinImage returns ref pinned to the digest the registry serves for it now
// (name:tag@sha256:...), so that every replica runs the same bytes even if
// the tag moves. When the registry cannot be asked (air-gapped node,
// image only loaded locally), ref is returned unchanged with a warning of
// one line saying what happened. A registry that did not answer is not
// asked again for silentFor (remembered in the cache dir).
// The lookup may use plain http: the digest pins the content, and agents
// verify every blob they pull against it.
func (a *app) pinImage(ctx context.Context, ref string) string {
	if strings.Contains(ref, "@") {
		return ref // already pinned
	}
	host := ""
	if r, err := name.ParseReference(ref); err == nil {
		host = r.Context().RegistryStr()
	}
	now := time.Now()
	silent := a.loadSilent()
	if at, ok := silent[host]; ok && host != "" && now.Sub(at) < silentFor && !at.After(now) {
		fmt.Fprintf(a.errOut, "warning: image %s not pinned to a digest: registry %s did not answer %s ago, not asked again before %s (--no-resolve-image skips the lookup)\n",
			ref, host, now.Sub(at).Round(time.Second), at.Add(silentFor).Format(time.TimeOnly))
		return ref
	}
	rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	d, err := image.Resolve(rctx, ref, image.PullOptions{Insecure: true})
	if err == nil {
		if _, ok := silent[host]; ok {
			delete(silent, host)
			a.saveSilent(silent)
		}
		return ref + "@" + d
	}
	if host != "" && noAnswer(err) {
		silent[host] = now
		a.saveSilent(silent)
		fmt.Fprintf(a.errOut, "warning: image %s not pinned to a digest: no answer from registry %s within %s (%s); not asked again for %s; tasks may run different versions if the tag moves\n",
			ref, host, resolveTimeout, shortErr(err), silentFor)
		return ref
	}
	fmt.Fprintf(a.errOut, "warning: image %s could not be pinned to a digest (%v); tasks may run different versions if the tag moves\n", ref, shortErr(err))
	return ref
}

// noAnswer tells a registry that did not answer (refused, unreachable,
// unknown host, timed out) from one that answered with an error (no such
// tag, refused credentials), which is worth asking again.
func noAnswer(err error) bool {
	var terr *transport.Error
	if errors.As(err, &terr) || errors.Is(err, image.ErrNotFound) || errors.Is(err, image.ErrUnauthorized) {
		return false
	}
	var nerr net.Error
	return errors.As(err, &nerr) || errors.Is(err, context.DeadlineExceeded)
}

// cachePath is the file of registries that did not answer, or "" when
// the CLI has no cache dir (then every command asks).
func (a *app) cachePath() string {
	dir := a.cacheDir
	if dir == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return ""
		}
		dir = filepath.Join(d, "shoal")
	}
	return filepath.Join(dir, silentFile)
}

// loadSilent reads the registries that did not answer; a missing or
// unreadable file is an empty set (the cache only saves time).
func (a *app) loadSilent() map[string]time.Time {
	m := map[string]time.Time{}
	p := a.cachePath()
	if p == "" {
		return m
	}
	if !ownedPrivately(filepath.Dir(p)) || !ownedPrivately(p) {
		// Another user could have written it (a shared SHOAL_CACHE_DIR):
		// it could make this one skip pinning. Ask the registries.
		return m
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return m
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return map[string]time.Time{}
	}
	return m
}

// ownedPrivately says whether p (not followed if a symlink) belongs to
// this user and nobody else may write to it.
func ownedPrivately(p string) bool {
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return false
	}
	return int(st.Uid) == os.Geteuid() && st.Mode&syscall.S_IFMT != syscall.S_IFLNK && st.Mode&0o022 == 0
}

// saveSilent writes the set (atomically: concurrent commands see the old
// or the new file). Failing to write only costs a later command a lookup.
func (a *app) saveSilent(m map[string]time.Time) {
	p := a.cachePath()
	if p == "" {
		return
	}
	b, err := json.Marshal(m)
	if err != nil {
		return
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return
	}
	f, err := os.CreateTemp(filepath.Dir(p), silentFile+".*")
	if err != nil {
		return
	}
	_, werr := f.Write(b)
	cerr := f.Close()
	if werr != nil || cerr != nil || os.Rename(f.Name(), p) != nil {
		os.Remove(f.Name())
	}
}

func shortErr(err error) string {
	s := err.Error()
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}
