package runtime

import (
	"fmt"
	goruntime "runtime"
	"sort"
	"strings"

	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// DefaultCaps is Docker's default capability set.
var DefaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// Docker's masked and read-only /proc (and /sys) paths.
var (
	maskedPaths = []string{
		"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
		"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
	}
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// cgroupPath is absolute so that it does not nest under the shim's own
// cgroup (see PLATFORM-NOTES). An empty parent is DefaultCgroupParent.
func cgroupPath(parent, id string) string {
	if parent == "" {
		parent = DefaultCgroupParent
	}
	return parent + "/" + id
}

// capabilities applies add/drop to DefaultCaps. "ALL" is understood in both.
func capabilities(add, drop []string) ([]string, error) {
	set := map[string]bool{}
	for _, c := range DefaultCaps {
		set[c] = true
	}
	norm := func(c string) string {
		c = strings.ToUpper(strings.TrimSpace(c))
		if c != "ALL" && !strings.HasPrefix(c, "CAP_") {
			c = "CAP_" + c
		}
		return c
	}
	for _, c := range drop {
		if c = norm(c); c == "ALL" {
			set = map[string]bool{}
		} else {
			delete(set, c)
		}
	}
	for _, c := range add {
		c = norm(c)
		if c == "ALL" {
			for _, k := range allCaps {
				set[k] = true
			}
			continue
		}
		if !knownCap(c) {
			return nil, fmt.Errorf("%w: unknown capability %q", ErrInvalidArgument, c)
		}
		set[c] = true
	}
	out := make([]string, 0, len(set))
	for c := range set {
		out = append(out, c)
	}
	sort.Strings(out)
	return out, nil
}

var allCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
	"CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
	"CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
	"CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
	"CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
	"CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

func knownCap(c string) bool {
	for _, k := range allCaps {
		if k == c {
			return true
		}
	}
	return false
}

// ociSpec turns our Spec into an OCI spec; specconv then does the heavy
// lifting (devices, mount flags, seccomp translation, loopback network).
// initBinary is the host path of the init for a spec with Init.
func ociSpec(s *Spec, cgroupParent, initBinary string) (*specs.Spec, error) {
	caps, err := capabilities(s.CapAdd, s.CapDrop)
	if err != nil {
		return nil, err
	}
	// The limits specrules allows, refused here too rather than clamped:
	// whatever reaches the runtime runs as asked or not at all.
	if r := s.Resources; r.NanoCPUs != 0 && (r.NanoCPUs < minNanoCPUs || r.NanoCPUs > maxNanoCPUs) {
		return nil, fmt.Errorf("%w: task %q: nano_cpus %d outside %d-%d (a CFS quota of 1 ms to 4096 CPUs)",
			ErrInvalidArgument, s.ID, r.NanoCPUs, int64(minNanoCPUs), int64(maxNanoCPUs))
	}
	if m := s.Resources.MemoryBytes; m != 0 && (m < minMemoryBytes || m > maxMemoryBytes) {
		return nil, fmt.Errorf("%w: task %q: memory limit %d bytes outside %d-%d (below the minimum the kernel OOM-kills the container's init)",
			ErrInvalidArgument, s.ID, m, minMemoryBytes, int64(maxMemoryBytes))
	}
	if s.Init && initBinary == "" {
		return nil, fmt.Errorf("%w: task %q asks for an init and none was found", ErrInvalidArgument, s.ID)
	}
	mounts := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
	}
	for _, m := range s.Mounts {
		if m.Tmpfs {
			opts := []string{"nosuid", "nodev", "mode=1777"}
			if m.TmpfsSize > 0 {
				opts = append(opts, fmt.Sprintf("size=%d", m.TmpfsSize))
			}
			if m.ReadOnly {
				opts = append(opts, "ro")
			}
			mounts = append(mounts, specs.Mount{Destination: m.Destination, Type: "tmpfs", Source: "tmpfs", Options: opts})
			continue
		}
		opts := []string{"rbind", "rprivate"}
		if m.ReadOnly {
			opts = append(opts, "ro")
		} else {
			opts = append(opts, "rw")
		}
		mounts = append(mounts, specs.Mount{Destination: m.Destination, Type: "bind", Source: m.Source, Options: opts})
	}
	if s.Init {
		mounts = append(mounts, initMount(initBinary))
	}

	netns := specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: s.NetNSPath}
	res := &specs.LinuxResources{}
	if r := s.Resources; r.MemoryBytes > 0 {
		lim := r.MemoryBytes
		res.Memory = &specs.LinuxMemory{Limit: &lim, Swap: &lim}
	}
	if r := s.Resources; r.NanoCPUs > 0 || r.CPUShares > 0 {
		res.CPU = &specs.LinuxCPU{}
		if r.NanoCPUs > 0 {
			period := uint64(cpuPeriodMicros)
			quota := r.NanoCPUs * cpuPeriodMicros / 1e9
			res.CPU.Period, res.CPU.Quota = &period, &quota
		}
		if r.CPUShares > 0 {
			shares := r.CPUShares
			res.CPU.Shares = &shares
		}
	}
	if s.Resources.PidsLimit > 0 {
		lim := s.Resources.PidsLimit
		res.Pids = &specs.LinuxPids{Limit: &lim}
	}

	return &specs.Spec{
		Version:  specs.Version,
		Root:     &specs.Root{Path: s.Rootfs, Readonly: s.ReadOnlyRootfs},
		Hostname: s.Hostname,
		Mounts:   mounts,
		Process: &specs.Process{
			Args:            processArgs(s),
			Cwd:             "/",
			NoNewPrivileges: true,
			Capabilities:    &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
		},
		Linux: &specs.Linux{
			CgroupsPath:   cgroupPath(cgroupParent, s.ID),
			Resources:     res,
			Namespaces:    namespaces(s.HostNetwork, netns),
			MaskedPaths:   maskedPaths,
			ReadonlyPaths: readonlyPaths,
			Seccomp:       DefaultSeccomp(),
		},
	}, nil
}

// namespaces are the container's namespaces: all new but the network one,
// which is netns (new, or a path joined) unless the container shares the
// node's (host network: no net namespace at all, so nothing unshares NET).
func namespaces(hostNetwork bool, netns specs.LinuxNamespace) []specs.LinuxNamespace {
	ns := []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.PIDNamespace}, {Type: specs.UTSNamespace}, {Type: specs.IPCNamespace}}
	if !hostNetwork {
		ns = append(ns, netns)
	}
	return append(ns, specs.LinuxNamespace{Type: specs.CgroupNamespace})
}

// OCISpec returns the OCI runtime spec equivalent to what Start runs for
// s with its cgroup under cgroupParent (empty: DefaultCgroupParent):
// namespaces, capabilities, seccomp profile, masked paths, mounts, limits.
// The user is not resolved (root) and the environment is PATH only. It is
// for comparing with other runtimes, e.g. the runc CLI in runtimebench. A spec
// with Init is refused (no init binary is looked up).
func OCISpec(s Spec, cgroupParent string) (*specs.Spec, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	o, err := ociSpec(&s, cgroupParent, "")
	if err != nil {
		return nil, err
	}
	o.Process.Env = containerEnv(s.Env, "")
	if s.Cwd != "" {
		o.Process.Cwd = s.Cwd
	}
	return o, nil
}

// libcontainerConfig builds the libcontainer config for s.
func libcontainerConfig(s *Spec, cgroupParent, initBinary string) (*configs.Config, error) {
	os, err := ociSpec(s, cgroupParent, initBinary)
	if err != nil {
		return nil, err
	}
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		CgroupName: s.ID,
		Spec:       os,
	})
	if err != nil {
		return nil, fmt.Errorf("task %q: libcontainer config: %w", s.ID, err)
	}
	// Never let the container keep the shim's parent death signal or
	// share the shim's session keyring.
	cfg.ParentDeathSignal = 0
	cfg.NoNewKeyring = false
	return cfg, nil
}

// Seccomp actions, syscalls: a denylist rather than Docker's long
// allowlist. Denied calls fail with EPERM; clone3 fails with ENOSYS so
// that libc falls back to clone, whose namespace flags are denied.
var deniedSyscalls = []string{
	"acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module",
	"delete_module", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick",
	"get_kernel_syms", "init_module", "ioperm", "iopl", "kcmp",
	"kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mount",
	"mount_setattr", "move_mount", "name_to_handle_at", "nfsservctl",
	"open_by_handle_at", "open_tree", "perf_event_open", "pivot_root",
	"process_vm_readv", "process_vm_writev", "ptrace", "query_module", "quotactl",
	"quotactl_fd", "reboot", "request_key", "setns", "settimeofday",
	"stime", "swapoff", "swapon", "sysfs", "_sysctl", "umount", "umount2", "unshare",
	"uselib", "userfaultfd", "ustat", "vm86", "vm86old",
}

// The compat ABIs are listed too so that a 32-bit call cannot bypass the
// filter.
var seccompArches = map[string][]specs.Arch{
	"amd64": {specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
	"arm64": {specs.ArchAARCH64, specs.ArchARM},
}

var nsCloneFlags = []uint64{
	unix.CLONE_NEWNS, unix.CLONE_NEWUTS, unix.CLONE_NEWIPC, unix.CLONE_NEWUSER,
	unix.CLONE_NEWPID, unix.CLONE_NEWNET, unix.CLONE_NEWCGROUP,
}

// (CLONE_NEWTIME is left out: for clone(2) 0x80 is part of the exit signal.)

// DefaultSeccomp is the default profile: allow everything except the
// dangerous syscalls listed above, and clone with any namespace flag.
func DefaultSeccomp() *specs.LinuxSeccomp {
	eperm := uint(unix.EPERM)
	enosys := uint(unix.ENOSYS)
	sc := &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Architectures: seccompArches[goruntime.GOARCH]}
	sc.Syscalls = append(sc.Syscalls,
		specs.LinuxSyscall{Names: deniedSyscalls, Action: specs.ActErrno, ErrnoRet: &eperm},
		specs.LinuxSyscall{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys},
	)
	for _, f := range nsCloneFlags {
		sc.Syscalls = append(sc.Syscalls, specs.LinuxSyscall{
			Names: []string{"clone"}, Action: specs.ActErrno, ErrnoRet: &eperm,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: f, ValueTwo: f, Op: specs.OpMaskedEqual}},
		})
	}
	return sc
}
