// Command probe is the test program run inside containers by the runtime
// tests: probe <action> [args]. Run under the name "true" (a symlink, as
// the runtime benchmark's /bin/true) it just exits 0.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	if filepath.Base(os.Args[0]) == "true" {
		os.Exit(0)
	}
	if len(os.Args) < 2 {
		os.Exit(2)
	}
	switch os.Args[1] {
	case "true":
	case "exit": // exit <code>
		var c int
		fmt.Sscan(os.Args[2], &c)
		os.Exit(c)
	case "echo": // echo to stdout and stderr
		fmt.Println("hello stdout")
		fmt.Fprintln(os.Stderr, "hello stderr")
	case "sleep": // sleep forever, ignoring SIGTERM unless told otherwise
		if len(os.Args) > 2 && os.Args[2] == "ignore-term" {
			signal.Ignore(syscall.SIGTERM)
		} else if len(os.Args) > 2 && os.Args[2] == "dfl-term" {
			// Like a C program that installs no handler: the kernel's
			// default action, which a namespace's PID 1 does not get.
			var act [4]uint64 // struct sigaction: SIG_DFL, no flags, empty mask
			if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(syscall.SIGTERM),
				uintptr(unsafe.Pointer(&act[0])), 0, 8, 0, 0); e != 0 {
				fmt.Println("rt_sigaction:", e)
				os.Exit(6)
			}
		} else if len(os.Args) > 2 && os.Args[2] == "exit-on-term" {
			ch := make(chan os.Signal, 1)
			signal.Notify(ch, syscall.SIGTERM)
			go func() { <-ch; os.Exit(42) }()
		}
		fmt.Println("sleeping")
		time.Sleep(time.Hour)
	case "write": // write <path>: exit 0 if the write worked, 3 otherwise
		if err := os.WriteFile(os.Args[2], []byte("x"), 0o644); err != nil {
			fmt.Println("write:", err)
			os.Exit(3)
		}
	case "unshare": // exit 0 if unshare is refused with EPERM
		err := syscall.Unshare(syscall.CLONE_NEWUTS)
		fmt.Println("unshare:", err)
		if err == syscall.EPERM {
			os.Exit(0)
		}
		os.Exit(4)
	case "oom": // allocate and touch memory until killed
		var keep [][]byte
		for {
			b := make([]byte, 1<<20)
			for i := range b {
				b[i] = 1
			}
			keep = append(keep, b)
		}
	case "sandbox": // prints one line per check that failed; exit 5 if any
		failed := false
		fail := func(f string, a ...any) { fmt.Printf(f+"\n", a...); failed = true }
		for _, d := range []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx"} {
			if _, err := os.Stat(d); err != nil {
				fail("device %s: %v", d, err)
			}
		}
		if f, err := os.OpenFile("/dev/null", os.O_WRONLY, 0); err != nil {
			fail("open /dev/null: %v", err)
		} else {
			f.Close()
		}
		if b, err := os.ReadFile("/proc/kcore"); err == nil && len(b) > 0 {
			fail("/proc/kcore readable: %d bytes", len(b))
		}
		if err := os.WriteFile("/proc/sys/kernel/hostname", []byte("x"), 0); err == nil {
			fail("/proc/sys writable")
		}
		if _, err := os.Stat("/proc/self/status"); err != nil {
			fail("/proc not mounted: %v", err)
		}
		if failed {
			os.Exit(5)
		}
	case "sleeptree": // start "probe sleep" as a child, say so, then sleep too
		if _, err := os.StartProcess(os.Args[0], []string{os.Args[0], "sleep"}, &os.ProcAttr{}); err != nil {
			fmt.Println(err)
			os.Exit(3)
		}
		fmt.Println("tree started")
		time.Sleep(time.Hour)
	case "spawn": // start "probe exit 0" and exit at once, printing its pid
		p, err := os.StartProcess(os.Args[0], []string{os.Args[0], "exit", "0"}, &os.ProcAttr{})
		if err != nil {
			fmt.Println(err)
			os.Exit(3)
		}
		fmt.Println(p.Pid)
	case "orphans": // orphans <wait>: make an orphan that exits; 0 once
		// PID 1 reaped it, 7 if it is still a zombie after <wait>
		wait, _ := time.ParseDuration(os.Args[2])
		out, err := exec.Command(os.Args[0], "spawn").Output()
		if err != nil {
			fmt.Println("spawn:", err)
			os.Exit(3)
		}
		stat := "/proc/" + strings.TrimSpace(string(out)) + "/stat"
		deadline := time.Now().Add(wait)
		for {
			b, err := os.ReadFile(stat)
			if err != nil {
				fmt.Println("orphan reaped")
				return
			}
			if time.Now().After(deadline) {
				fmt.Printf("orphan not reaped: %s\n", b)
				os.Exit(7)
			}
			time.Sleep(10 * time.Millisecond)
		}
	case "env":
		for _, e := range os.Environ() {
			fmt.Println(e)
		}
	case "cat": // copy stdin to stdout
		b := make([]byte, 4096)
		for {
			n, err := os.Stdin.Read(b)
			os.Stdout.Write(b[:n])
			if err != nil {
				return
			}
		}
	case "whoami": // uid gid cwd
		wd, _ := os.Getwd()
		fmt.Printf("uid=%d gid=%d cwd=%s\n", os.Getuid(), os.Getgid(), wd)
	case "ttywatch": // print the terminal and its size, then the size again per input line
		name, _ := os.Readlink("/proc/self/fd/0")
		fmt.Printf("tty=%s size=%s\n", name, winsize())
		b := make([]byte, 256)
		for {
			n, err := os.Stdin.Read(b)
			if err != nil {
				return
			}
			if strings.Contains(string(b[:n]), "q") {
				return
			}
			fmt.Printf("size=%s\n", winsize())
		}
	}
}

// winsize is stdin's terminal size as "ROWSxCOLS".
func winsize() string {
	var ws [4]uint16
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, 0, syscall.TIOCGWINSZ, uintptr(unsafe.Pointer(&ws))); e != 0 {
		return "none"
	}
	return fmt.Sprintf("%dx%d", ws[0], ws[1])
}
