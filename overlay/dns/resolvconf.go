package dns

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ResolvConf returns the /etc/resolv.conf a task on a user network must
// see: the embedded server as its only nameserver, the node's search
// domains (read from hostResolvConf, e.g. "/etc/resolv.conf"; a missing
// file means none), and options ndots:0 so that "web" is asked as is
// before any search domain is appended.
func ResolvConf(hostResolvConf string) ([]byte, error) {
	var search []string
	if hostResolvConf != "" {
		data, err := os.ReadFile(hostResolvConf)
		if err != nil && !os.IsNotExist(err) {
			return nil, err
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) > 1 && (f[0] == "search" || f[0] == "domain") {
				search = f[1:]
			}
		}
	}
	var b bytes.Buffer
	b.WriteString("# written by shoal: the embedded DNS server of the task's namespace\n")
	b.WriteString("nameserver 127.0.0.11\n")
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	b.WriteString("options ndots:0\n")
	return b.Bytes(), nil
}

// WriteResolvConf writes ResolvConf(hostResolvConf) to path atomically
// (temp file + rename, mode 0644), creating its directory. The agent
// writes it per task (e.g. <task state dir>/resolv.conf) and the
// runtime bind-mounts it read-only on /etc/resolv.conf in the container.
func WriteResolvConf(path, hostResolvConf string) error {
	data, err := ResolvConf(hostResolvConf)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
