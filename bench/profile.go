package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"golang.org/x/sync/errgroup"
)

// debugPort is where every shoal node of a run with -pprof serves Go's
// pprof handlers (SHOAL_DEBUG_ADDR=<node ip>:debugPort): each node has its
// own loopback address, so one port serves them all.
const debugPort = "6061"

// nodeEnv is the extra environment of a shoal node: with -pprof, its
// SHOAL_DEBUG_ADDR on its own address (the benchmark's own environment
// would hand one address to every node, and only the first could bind it).
func (e *env) nodeEnv(n *shoalNode) []string {
	if e.o.pprofDir == "" {
		return nil
	}
	return []string{"SHOAL_DEBUG_ADDR=" + net.JoinHostPort(n.ip, debugPort)}
}

// profileTarget is one node whose CPU profile a cell takes.
type profileTarget struct {
	name string // m1, m2, ...
	ip   string
	role string // leader or follower
}

// profilePath is where a cell's profile of one node goes:
// DIR/<label>-c<concurrency>-<node>-<role>.pb.gz.
func profilePath(dir, label string, conc int, t profileTarget) string {
	return filepath.Join(dir, fmt.Sprintf("%s-c%d-%s-%s.pb.gz", label, conc, t.name, t.role))
}

// profileSeconds is the length of the profile taken in a measured window
// of d: whole seconds (pprof's unit), at least one, ending before the
// window does.
func profileSeconds(d time.Duration) int {
	return max(1, int(d/time.Second))
}

// profileCell takes a CPU profile of every target at once, starting at
// from (the measured window's start) and lasting profileSeconds(measure),
// and writes each to profilePath. A profile that cannot be taken is an
// error, so that a run asked for profiles does not come back without them.
// port is the targets' debug port (debugPort; a test's server elsewhere).
func profileCell(ctx context.Context, dir, label string, conc int, targets []profileTarget, port string, from time.Time, measure time.Duration) error {
	t := time.NewTimer(time.Until(from))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	secs := profileSeconds(measure)
	g, gctx := errgroup.WithContext(ctx)
	for _, tg := range targets {
		g.Go(func() error {
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", net.JoinHostPort(tg.ip, port), secs)
			rctx, cancel := context.WithTimeout(gctx, time.Duration(secs)*time.Second+30*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("profile of %s: %w", tg.name, err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
				return fmt.Errorf("profile of %s: %s: %s", tg.name, resp.Status, b)
			}
			path := profilePath(dir, label, conc, tg)
			f, err := os.Create(path)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, resp.Body); err != nil {
				f.Close()
				return fmt.Errorf("profile of %s: %w", tg.name, err)
			}
			return f.Close()
		})
	}
	return g.Wait()
}

// selfProfilePath is where a cell's CPU profile of the benchmark process
// itself goes: DIR/<label>-c<concurrency>-bench.pb.gz (label is shoal-<N>m
// or etcd): the writers' client side, to set beside the members'.
func selfProfilePath(dir, label string, conc int) string {
	return filepath.Join(dir, fmt.Sprintf("%s-c%d-bench.pb.gz", label, conc))
}

// profileSelf takes a CPU profile of the benchmark process from from for
// profileSeconds(measure) and writes it to path. Cells run one after the
// other, so only one such profile is ever running (runtime/pprof allows
// one).
func profileSelf(ctx context.Context, path string, from time.Time, measure time.Duration) error {
	wait := func(d time.Duration) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := wait(time.Until(from)); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("profile of the benchmark: %w", err)
	}
	werr := wait(time.Duration(profileSeconds(measure)) * time.Second)
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		return err
	}
	return werr
}
