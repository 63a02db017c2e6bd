package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/agent/runtime/hostclean"
	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Helpers for the tests that look at the containers from outside: their
// processes, cgroups, mounts and files on the host, and their HTTP answer.

// runTimeout bounds the wait for a service's tasks to be RUNNING: image
// unpack, rootfs, network and container start on a loaded 2-core machine.
const runTimeout = 60 * time.Second

// demoPort is where the demo image's default command (serve) listens.
const demoPort = 8080

// pidAlive reports whether a process exists (and is not a zombie waiting to
// be reaped: a container's init whose shim died is reparented and reaped,
// but may be seen for a moment in that state).
func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// inCgroups checks that pid is one of h's container processes.
func inCgroups(h *harness.Host, pid int) error {
	pids, err := h.CgroupPids()
	if err != nil {
		return err
	}
	if !slices.Contains(pids, pid) {
		return fmt.Errorf("pid %d is not in %s's cgroups (%s: %v)", pid, h, h.CgroupParent(), pids)
	}
	return nil
}

// taskPaths are the places a task occupies on its node (see agent and
// agent/runtime): its rootfs dir, log (and rotated logs), runtime state dir
// and network namespace bind mount.
func taskPaths(h *harness.Host, id string) []string {
	return []string{
		filepath.Join(h.DataDir, "agent", "tasks", id),
		filepath.Join(h.DataDir, "agent", "logs", id+".log"),
		filepath.Join(h.DataDir, "agent", "logs", id+".log.1"),
		filepath.Join(h.DataDir, "runtime", id),
		filepath.Join(h.DataDir, "network", "netns", id),
	}
}

// taskLeftovers lists what of the given tasks is still on h: cgroup dirs
// (in any hierarchy), mounts and files.
func taskLeftovers(h *harness.Host, ids []string) ([]string, error) {
	var left []string
	dirs, err := h.CgroupDirs()
	if err != nil {
		return nil, err
	}
	for _, d := range dirs {
		if slices.Contains(ids, filepath.Base(d)) {
			left = append(left, "cgroup "+d)
		}
	}
	mounts, err := h.Mounts()
	if err != nil {
		return nil, err
	}
	for _, m := range mounts {
		for _, id := range ids {
			if strings.Contains(m, id) {
				left = append(left, "mount "+m)
			}
		}
	}
	for _, id := range ids {
		for _, p := range taskPaths(h, id) {
			if _, err := os.Lstat(p); err == nil {
				left = append(left, "file "+p)
			}
		}
	}
	return left, nil
}

// hostLeftovers lists every trace of any container on h: processes in its
// cgroups, task cgroups, mounts under its data dir, and entries in the task,
// log, runtime and netns dirs. Empty once the node runs no task.
func hostLeftovers(h *harness.Host) ([]string, error) {
	var left []string
	pids, err := h.CgroupPids()
	if err != nil {
		return nil, err
	}
	for _, p := range pids {
		left = append(left, fmt.Sprintf("pid %d", p))
	}
	dirs, err := h.CgroupDirs()
	if err != nil {
		return nil, err
	}
	for _, d := range dirs {
		left = append(left, "cgroup "+d)
	}
	mounts, err := hostclean.MountsUnder(h.DataDir)
	if err != nil {
		return nil, err
	}
	for _, m := range mounts {
		left = append(left, "mount "+m)
	}
	for _, d := range []string{"agent/tasks", "agent/logs", "runtime", "network/netns"} {
		ents, err := os.ReadDir(filepath.Join(h.DataDir, d))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		for _, e := range ents {
			left = append(left, "file "+filepath.Join(d, e.Name()))
		}
	}
	return left, nil
}

// whoami is the part of the demo's GET /json answer the tests look at.
type whoami struct {
	Hostname string   `json:"hostname"`
	IPs      []string `json:"ips"`
	Env      []string `json:"env"`
}

// httpGet GETs url from inside host h and returns the body of a 200.
func httpGet(ctx context.Context, h *harness.Host, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := h.HTTPClient(5 * time.Second).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s from %s: %s: %.200s", url, h, resp.Status, b)
	}
	return b, nil
}

// getWhoami asks the demo server of a task, from inside the host it runs
// on (task addresses live on the node's bridge), and checks that the
// answer comes from a container that has the task's address.
func getWhoami(ctx context.Context, h *harness.Host, ip string) (whoami, error) {
	var w whoami
	url := fmt.Sprintf("http://%s:%d/json", ip, demoPort)
	b, err := httpGet(ctx, h, url)
	if err != nil {
		return w, err
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return w, fmt.Errorf("GET %s: %w: %.200s", url, err, b)
	}
	for _, a := range w.IPs {
		if strings.Contains(a, " "+ip+"/") {
			return w, nil
		}
	}
	return w, fmt.Errorf("the server at %s says its addresses are %v", ip, w.IPs)
}

// taskIDs returns the tasks' ids.
func taskIDs(tasks []*shoalv1.Task) []string {
	ids := make([]string, len(tasks))
	for i, tk := range tasks {
		ids[i] = tk.GetMeta().GetId()
	}
	slices.Sort(ids)
	return ids
}

// checkContainers checks every task from outside: its node is known, its
// status has a pid that is alive and in that host's cgroups, an address,
// and an image digest.
func (c *cluster) checkContainers(tasks []*shoalv1.Task) error {
	for _, tk := range tasks {
		h := c.hostOf(tk.GetNodeId())
		if h == nil {
			return fmt.Errorf("task %s on unknown node %q", tk.GetMeta().GetId(), tk.GetNodeId())
		}
		st := tk.GetStatus()
		if !pidAlive(int(st.GetPid())) {
			return fmt.Errorf("task %s: pid %d is not alive", tk.GetMeta().GetId(), st.GetPid())
		}
		if err := inCgroups(h, int(st.GetPid())); err != nil {
			return fmt.Errorf("task %s: %w", tk.GetMeta().GetId(), err)
		}
		if harness.TaskIP(tk) == "" {
			return fmt.Errorf("task %s has no address", tk.GetMeta().GetId())
		}
		if !strings.HasPrefix(st.GetImageDigest(), "sha256:") {
			return fmt.Errorf("task %s: image_digest %q", tk.GetMeta().GetId(), st.GetImageDigest())
		}
	}
	return nil
}
