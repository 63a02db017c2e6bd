// Command shoal-demo is Shoal's demo and test program: one static binary
// (standard library only) with subcommands, usable as PID 1 in a container.
//
// Build it static:
//
//	CGO_ENABLED=0 go build -o bin/shoal-demo ./cmd/shoal-demo
//
// Usage: shoal-demo [COMMAND [ARGS...]]
//
//	serve [--addr :8080]     HTTP whoami server (the default with no args):
//	                         GET / (text), /json, /health ("ok"),
//	                         /exit?code=N (replies, then exits with N).
//	                         SIGTERM/SIGINT: graceful shutdown, exit 0.
//	udp-echo [--addr :9090]  UDP echo server: answers every datagram with
//	                         "HOSTNAME PAYLOAD". SIGTERM/SIGINT: exit 0.
//	sleep DURATION           Go duration ("1m30s"), seconds ("2.5") or "inf";
//	                         SIGTERM/SIGINT: exit 0 at once.
//	exit CODE                exit with CODE.
//	alloc SIZE [--hold D]    allocate and touch SIZE bytes (64m, 1g, 512k,
//	                         binary units), print progress, then hold for D
//	                         (default forever; SIGTERM exits 0). For OOM tests.
//	resolve NAME             print NAME's addresses (pure Go resolver), or
//	                         exit 1 with the error.
//	fetch URL                GET URL and print the body; exit 1 on a transport
//	                         error or an HTTP status >= 400.
//	echo ARGS...             print ARGS joined by spaces.
//	env                      print the environment, one variable a line.
//	cat FILE...              print files.
//	ls [DIR]                 list DIR (default "."): mode, size, name.
//	write FILE TEXT          write TEXT to FILE (exit 1 on failure, e.g. a
//	                         read-only rootfs).
//	id                       print uid, gid, euid, egid and groups.
//	caps                     print the CapEff and CapBnd lines of
//	                         /proc/self/status.
//	syscall-unshare [KIND]   call unshare(2) with CLONE_NEW<KIND> (user, the
//	                         default, uts, net, ipc, mnt, pid, cgroup) and print
//	                         the result; exit 0 on success, 1 on an errno.
//	                         A Go process is multithreaded, so an allowed
//	                         unshare(CLONE_NEWUSER) fails with EINVAL; EPERM
//	                         means seccomp (or a missing capability) refused it.
//	                         "uts" needs CAP_SYS_ADMIN: a test for capabilities.
//	true                     exit 0.
//
// Errors go to stderr; a bad command line exits 2.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "shoal-demo %s: %v\n", cmd, err)
		return 1
	}
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "shoal-demo %s: %s\n", cmd, msg)
		return 2
	}
	switch cmd {
	case "serve":
		addr := ":8080"
		rest, err := takeFlag(args, "addr", &addr)
		if err != nil || len(rest) != 0 {
			return usage("usage: serve [--addr :8080]")
		}
		err = serve(addr, stderr)
		var code exitCode
		if errors.As(err, &code) {
			return int(code)
		} else if err != nil {
			return fail(err)
		}
		return 0
	case "udp-echo":
		addr := ":9090"
		rest, err := takeFlag(args, "addr", &addr)
		if err != nil || len(rest) != 0 {
			return usage("usage: udp-echo [--addr :9090]")
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		if err := udpEcho(ctx, addr, nil); err != nil {
			return fail(err)
		}
		return 0
	case "sleep":
		if len(args) != 1 {
			return usage("usage: sleep DURATION|inf")
		}
		d, err := parseDuration(args[0])
		if err != nil {
			return usage(err.Error())
		}
		waitOrSignal(d)
		return 0
	case "exit":
		if len(args) != 1 {
			return usage("usage: exit CODE")
		}
		code, err := strconv.Atoi(args[0])
		if err != nil {
			return usage(err.Error())
		}
		return code
	case "alloc":
		hold := "inf"
		rest, err := takeFlag(args, "hold", &hold)
		if err != nil || len(rest) != 1 {
			return usage("usage: alloc SIZE [--hold DURATION]")
		}
		size, err := parseSize(rest[0])
		if err != nil {
			return usage(err.Error())
		}
		d, err := parseDuration(hold)
		if err != nil {
			return usage(err.Error())
		}
		buf := alloc(size, stdout)
		waitOrSignal(d)
		runtime.KeepAlive(buf)
		return 0
	case "resolve":
		if len(args) != 1 {
			return usage("usage: resolve NAME")
		}
		net.DefaultResolver.PreferGo = true
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupHost(ctx, args[0])
		if err != nil {
			return fail(err)
		}
		for _, a := range addrs {
			fmt.Fprintln(stdout, a)
		}
		return 0
	case "fetch":
		if len(args) != 1 {
			return usage("usage: fetch URL")
		}
		if err := fetch(args[0], stdout); err != nil {
			return fail(err)
		}
		return 0
	case "echo":
		fmt.Fprintln(stdout, strings.Join(args, " "))
		return 0
	case "env":
		for _, kv := range os.Environ() {
			fmt.Fprintln(stdout, kv)
		}
		return 0
	case "cat":
		for _, f := range args {
			b, err := os.ReadFile(f)
			if err != nil {
				return fail(err)
			}
			stdout.Write(b)
		}
		return 0
	case "ls":
		dir := "."
		if len(args) > 1 {
			return usage("usage: ls [DIR]")
		} else if len(args) == 1 {
			dir = args[0]
		}
		if err := list(dir, stdout); err != nil {
			return fail(err)
		}
		return 0
	case "write":
		if len(args) != 2 {
			return usage("usage: write FILE TEXT")
		}
		if err := os.WriteFile(args[0], []byte(args[1]), 0o644); err != nil {
			return fail(err)
		}
		return 0
	case "id":
		groups, _ := os.Getgroups()
		gs := make([]string, len(groups))
		for i, g := range groups {
			gs[i] = strconv.Itoa(g)
		}
		fmt.Fprintf(stdout, "uid=%d gid=%d euid=%d egid=%d groups=%s\n",
			os.Getuid(), os.Getgid(), os.Geteuid(), os.Getegid(), strings.Join(gs, ","))
		return 0
	case "caps":
		b, err := os.ReadFile("/proc/self/status")
		if err != nil {
			return fail(err)
		}
		fmt.Fprint(stdout, capLines(string(b)))
		return 0
	case "syscall-unshare":
		kind := "user"
		if len(args) > 1 {
			return usage("usage: syscall-unshare [user|uts|net|ipc|mnt|pid|cgroup]")
		} else if len(args) == 1 {
			kind = args[0]
		}
		flag, ok := unshareFlags[kind]
		if !ok {
			return usage("unknown namespace kind " + strconv.Quote(kind))
		}
		// Unsharing changes the calling thread only: keep it off the
		// scheduler's pool so no other goroutine inherits the namespace.
		runtime.LockOSThread()
		err := syscall.Unshare(flag)
		name := "CLONE_NEW" + strings.ToUpper(kind)
		if err != nil {
			var errno syscall.Errno
			if errors.As(err, &errno) {
				fmt.Fprintf(stdout, "unshare(%s): errno %d (%s): %v\n", name, int(errno), errnoName(errno), err)
			} else {
				fmt.Fprintf(stdout, "unshare(%s): %v\n", name, err)
			}
			return 1
		}
		fmt.Fprintf(stdout, "unshare(%s): ok\n", name)
		return 0
	case "true":
		return 0
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, "usage: shoal-demo [serve|sleep|exit|alloc|resolve|fetch|echo|env|cat|ls|write|id|caps|syscall-unshare|true] ARGS...")
		return 0
	default:
		return usage("unknown command (try help)")
	}
}

// takeFlag removes "--name VALUE", "--name=VALUE" (or one dash) from args,
// wherever it is, and returns the remaining arguments.
func takeFlag(args []string, name string, val *string) ([]string, error) {
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--"+name || a == "-"+name:
			if i+1 >= len(args) {
				return nil, fmt.Errorf("--%s needs a value", name)
			}
			*val = args[i+1]
			i++
		case strings.HasPrefix(a, "--"+name+"="):
			*val = strings.TrimPrefix(a, "--"+name+"=")
		case strings.HasPrefix(a, "-"+name+"="):
			*val = strings.TrimPrefix(a, "-"+name+"=")
		case strings.HasPrefix(a, "-") && len(a) > 1 && !isNumber(a):
			return nil, fmt.Errorf("unknown flag %s", a)
		default:
			rest = append(rest, a)
		}
	}
	return rest, nil
}

func isNumber(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}

// parseDuration accepts a Go duration ("1m30s"), a number of seconds
// ("10", "2.5") or "inf"/"infinity"/"forever", which returns -1.
func parseDuration(s string) (time.Duration, error) {
	switch strings.ToLower(s) {
	case "inf", "infinity", "forever":
		return -1, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f < 0 || f > float64(1<<63-1)/float64(time.Second) {
			return 0, fmt.Errorf("duration %q out of range", s)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q (want e.g. 10s, 2.5, inf)", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	return d, nil
}

// parseSize parses a byte count with an optional binary unit: 512, 64k,
// 64m, 1g, 64M, 64MB, 64MiB, 1.5g. Units are powers of 1024.
func parseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "ib"), "b")
	mult := int64(1)
	if n := len(t); n > 0 {
		if i := strings.IndexByte("kmgt", t[n-1]); i >= 0 {
			mult = 1 << (10 * (i + 1))
			t = t[:n-1]
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || t == "" || f < 0 {
		return 0, fmt.Errorf("bad size %q (want e.g. 64m, 1g, 4096)", s)
	}
	v := f * float64(mult)
	if v >= float64(1<<62) {
		return 0, fmt.Errorf("size %q too large", s)
	}
	return int64(v), nil
}

// waitOrSignal returns after d (never if d < 0) or on SIGTERM/SIGINT.
func waitOrSignal(d time.Duration) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if d < 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// alloc allocates size bytes in 1 MiB chunks, writing to every page so the
// memory is really committed, and reports progress every 10%.
func alloc(size int64, w io.Writer) [][]byte {
	const chunk = 1 << 20
	var bufs [][]byte
	next := size / 10
	for done := int64(0); done < size; {
		n := min(int64(chunk), size-done)
		b := make([]byte, n)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		bufs = append(bufs, b)
		done += n
		if done >= next || done == size {
			fmt.Fprintf(w, "allocated %d of %d bytes\n", done, size)
			next = done + size/10
		}
	}
	fmt.Fprintf(w, "done: %d bytes allocated and touched\n", size)
	return bufs
}

func fetch(url string, w io.Writer) error {
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP status %s", resp.Status)
	}
	return nil
}

func list(dir string, w io.Writer) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s %10d %s\n", fi.Mode(), fi.Size(), e.Name())
	}
	return nil
}

// capLines returns the CapEff and CapBnd lines of a /proc/PID/status text.
func capLines(status string) string {
	var b strings.Builder
	for _, l := range strings.Split(status, "\n") {
		if strings.HasPrefix(l, "CapEff:") || strings.HasPrefix(l, "CapBnd:") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

var unshareFlags = map[string]int{
	"user":   syscall.CLONE_NEWUSER,
	"uts":    syscall.CLONE_NEWUTS,
	"net":    syscall.CLONE_NEWNET,
	"ipc":    syscall.CLONE_NEWIPC,
	"mnt":    syscall.CLONE_NEWNS,
	"pid":    syscall.CLONE_NEWPID,
	"cgroup": 0x02000000, // CLONE_NEWCGROUP, not in package syscall
}

func errnoName(e syscall.Errno) string {
	names := map[syscall.Errno]string{
		syscall.EPERM: "EPERM", syscall.EINVAL: "EINVAL", syscall.ENOSYS: "ENOSYS",
		syscall.EACCES: "EACCES", syscall.ENOSPC: "ENOSPC", syscall.ENOMEM: "ENOMEM",
		syscall.EUSERS: "EUSERS",
	}
	if n, ok := names[e]; ok {
		return n
	}
	return "errno"
}

// ---- serve ----

// whoami is what GET / and GET /json report.
type whoami struct {
	Hostname string      `json:"hostname"`
	IPs      []string    `json:"ips"`
	Env      []string    `json:"env"`
	Request  requestInfo `json:"request"`
}

type requestInfo struct {
	Method     string              `json:"method"`
	Path       string              `json:"path"`
	Query      string              `json:"query,omitempty"`
	Proto      string              `json:"proto"`
	Host       string              `json:"host"`
	RemoteAddr string              `json:"remote_addr"`
	Headers    map[string][]string `json:"headers"`
}

func collect(r *http.Request) whoami {
	host, _ := os.Hostname()
	env := os.Environ()
	sort.Strings(env)
	return whoami{
		Hostname: host,
		IPs:      interfaceIPs(),
		Env:      env,
		Request: requestInfo{
			Method:     r.Method,
			Path:       r.URL.Path,
			Query:      r.URL.RawQuery,
			Proto:      r.Proto,
			Host:       r.Host,
			RemoteAddr: r.RemoteAddr,
			Headers:    r.Header,
		},
	}
}

// interfaceIPs lists every address of every interface as "name addr/len".
func interfaceIPs() []string {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	ips := []string{}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ips = append(ips, ifc.Name+" "+a.String())
		}
	}
	return ips
}

func (w whoami) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Hostname: %s\n", w.Hostname)
	for _, ip := range w.IPs {
		fmt.Fprintf(&b, "IP: %s\n", ip)
	}
	for _, kv := range w.Env {
		fmt.Fprintf(&b, "Env: %s\n", kv)
	}
	r := w.Request
	fmt.Fprintf(&b, "RemoteAddr: %s\n", r.RemoteAddr)
	target := r.Path
	if r.Query != "" {
		target += "?" + r.Query
	}
	fmt.Fprintf(&b, "%s %s %s\n", r.Method, target, r.Proto)
	fmt.Fprintf(&b, "Host: %s\n", r.Host)
	keys := make([]string, 0, len(r.Headers))
	for k := range r.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range r.Headers[k] {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	return b.String()
}

// udpEcho answers every datagram on addr with "HOSTNAME PAYLOAD" until ctx
// ends. ready, if not nil, receives the bound address.
func udpEcho(ctx context.Context, addr string, ready chan<- net.Addr) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	defer pc.Close()
	if ready != nil {
		ready <- pc.LocalAddr()
	}
	go func() {
		<-ctx.Done()
		pc.Close()
	}()
	host, _ := os.Hostname()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		reply := append([]byte(host+" "), buf[:n]...)
		if _, err := pc.WriteTo(reply, from); err != nil && ctx.Err() != nil {
			return nil
		}
	}
}
