package specrules

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/google/go-containerregistry/pkg/name"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// Node is what only the node that runs a task can judge. The Control API
// passes the zero value.
type Node struct {
	// DataDir is the node's data dir (absolute, symlinks resolved): a
	// bind source may be neither inside it nor one of its parents.
	DataDir string
}

// Service checks a whole service spec.
func Service(spec *shoalv1.ServiceSpec) Problems {
	return ServiceUpdate(spec, false)
}

// ServiceUpdate checks spec as Service does, except for its task when
// taskAccepted: the caller knows that these rules, in this process,
// accepted that very task (an update that leaves the task as a write
// checked by this code stored it). Only Task's rules are skipped, and they
// read nothing but the task, so whenever the task has no problem the
// problems are Service's own, with the same field paths and reasons; rules
// of the service that read the task too (published ports need a network)
// still run.
func ServiceUpdate(spec *shoalv1.ServiceSpec, taskAccepted bool) Problems {
	var p Problems
	if spec == nil {
		p.Add("spec", "required")
		return p
	}
	switch n := spec.GetName(); {
	case n == "":
		p.Add("spec.name", "required")
	case !ValidName(n):
		p.Add("spec.name", "%q is not a valid name (letters, digits, '_', '.', '-'; at most 63; starts with a letter or digit)", n)
	}
	labels(&p, "spec.labels", spec.GetLabels())
	switch spec.GetMode() {
	case shoalv1.ServiceMode_SERVICE_MODE_REPLICATED:
		if spec.GetReplicas() < 0 {
			p.Add("spec.replicas", "must be >= 0, got %d", spec.GetReplicas())
		}
	case shoalv1.ServiceMode_SERVICE_MODE_GLOBAL:
		if spec.GetReplicas() != 0 {
			p.Add("spec.replicas", "must be unset for a global service, got %d", spec.GetReplicas())
		}
	case shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB, shoalv1.ServiceMode_SERVICE_MODE_GLOBAL_JOB:
	default:
		p.Add("spec.mode", "unknown mode %d", spec.GetMode())
	}
	jobRules(&p, spec)
	autoRebalance(&p, spec)
	if !taskAccepted {
		p = append(p, Task("spec.task", spec.GetTask(), Node{})...)
	}
	updateConfig(&p, "spec.update", spec.GetUpdate())
	updateConfig(&p, "spec.rollback", spec.GetRollback())
	if ep := spec.GetEndpoint(); ep != nil {
		switch ep.GetMode() {
		case "", "vip":
		case "dnsrr":
		default:
			p.Add("spec.endpoint.mode", "must be vip or dnsrr, got %q", ep.GetMode())
		}
		ports(&p, ep.GetPorts())
		if len(ep.GetPorts()) > 0 && len(spec.GetTask().GetNetworks()) == 0 {
			// The nodes learn ports and backends from the network states.
			p.Add("spec.endpoint.ports", "publishing a port needs the service on an overlay network (--network) for now")
		}
	}
	return p
}

// Task checks a task spec; field is its path ("spec.task" for a service,
// "spec" for a task). The agent passes its Node.
func Task(field string, t *shoalv1.TaskSpec, node Node) Problems {
	var p Problems
	if t == nil || t.GetContainer() == nil {
		p.Add(field+".container.image", "required")
		return p
	}
	container(&p, field+".container", t.GetContainer(), node)
	resources(&p, field+".resources", t.GetResources())
	if rp := t.GetRestart(); rp != nil {
		rf := field + ".restart"
		switch rp.GetCondition() {
		case shoalv1.RestartCondition_RESTART_CONDITION_ANY, shoalv1.RestartCondition_RESTART_CONDITION_ON_FAILURE,
			shoalv1.RestartCondition_RESTART_CONDITION_NONE:
		default:
			p.Add(rf+".condition", "unknown condition %d (any, on-failure or none)", rp.GetCondition())
		}
		duration(&p, rf+".delay_ms", rp.GetDelayMs())
		duration(&p, rf+".window_ms", rp.GetWindowMs())
		restartBackoff(&p, rf, rp)
		if n := rp.GetMaxAttempts(); n < 0 || n > MaxRestartAttempts {
			p.Add(rf+".max_attempts", "must be 0 (unlimited) to %d, got %d", MaxRestartAttempts, n)
		}
	}
	if pl := t.GetPlacement(); pl != nil {
		pf := field + ".placement"
		if n := len(pl.GetConstraints()); n > MaxConstraints {
			p.Add(pf+".constraints", "%d constraints, at most %d", n, MaxConstraints)
		}
		for i, c := range pl.GetConstraints() {
			if len(c) > MaxConstraint {
				p.Add(fmt.Sprintf("%s.constraints[%d]", pf, i), "%d bytes long, at most %d", len(c), MaxConstraint)
			}
		}
		placementRules(&p, pf, pl)
		if pl.GetMaxReplicasPerNode() < 0 {
			p.Add(pf+".max_replicas_per_node", "must be >= 0, got %d", pl.GetMaxReplicasPerNode())
		}
	}
	taskNetworks(&p, field, t)
	return p
}

func duration(p *Problems, field string, ms int64) {
	switch {
	case ms < 0:
		p.Add(field, "must be >= 0, got %d", ms)
	case ms > MaxDuration.Milliseconds():
		p.Add(field, "must be at most %d (%s), got %d", MaxDuration.Milliseconds(), MaxDuration, ms)
	}
}

func container(p *Problems, cf string, c *shoalv1.ContainerSpec, node Node) {
	switch ref := c.GetImage(); {
	case ref == "":
		p.Add(cf+".image", "required")
	case len(ref) > MaxImageRef:
		p.Add(cf+".image", "%d bytes long, at most %d", len(ref), MaxImageRef)
	default:
		if err := ImageRef(ref); err != nil {
			p.Add(cf+".image", "%v", err)
		}
	}
	total := 0
	argv := func(name string, list []string) {
		for i, a := range list {
			f := func() string { return fmt.Sprintf("%s.%s[%d]", cf, name, i) }
			total += len(a) + 1
			switch {
			case len(a) > MaxArgEntry:
				p.Add(f(), "%d bytes long, at most %d", len(a), MaxArgEntry)
			case strings.IndexByte(a, 0) >= 0:
				p.Add(f(), "contains a NUL byte")
			}
		}
	}
	if n := len(c.GetCommand()) + len(c.GetArgs()); n > MaxArgv {
		p.Add(cf+".args", "command and args have %d entries, at most %d", n, MaxArgv)
	}
	argv("command", c.GetCommand())
	argv("args", c.GetArgs())
	env(p, cf+".env", c.GetEnv(), &total)
	if total > MaxProcessBytes {
		p.Add(cf+".env", "command, args and env take %d bytes, at most %d", total, MaxProcessBytes)
	}
	if w := c.GetWorkdir(); w != "" {
		if err := absPath(w); err != nil {
			p.Add(cf+".workdir", "%v", err)
		}
	}
	if u := c.GetUser(); u != "" {
		if err := User(u); err != nil {
			p.Add(cf+".user", "%v", err)
		}
	}
	if h := c.GetHostname(); h != "" {
		if err := Hostname(h); err != nil {
			p.Add(cf+".hostname", "%v", err)
		}
	}
	mounts(p, cf+".mounts", c.GetMounts(), node)
	caps(p, cf+".cap_add", c.GetCapAdd())
	caps(p, cf+".cap_drop", c.GetCapDrop())
	if s := c.GetStopSignal(); s != "" {
		if _, err := ParseSignal(s); err != nil {
			p.Add(cf+".stop_signal", "%v", err)
		}
	}
	switch g := c.GetStopGraceMs(); {
	case g < 0:
		p.Add(cf+".stop_grace_ms", "must be >= 0, got %d", g)
	case g > MaxStopGrace.Milliseconds():
		p.Add(cf+".stop_grace_ms", "must be at most %d (%s), got %d", MaxStopGrace.Milliseconds(), MaxStopGrace, g)
	}
	labels(p, cf+".labels", c.GetLabels())
	healthcheck(p, cf+".healthcheck", c.GetHealthcheck())
}

// RedactedEnvValue stands, for a viewer token, in place of each
// environment variable's value (manager/controlapi's redaction). No spec
// may hold it as a value: a spec read with a viewer token and written
// back with a stronger one would otherwise silently replace every secret
// with it.
const RedactedEnvValue = "<redacted>"

// env: KEY=VALUE, the key without '=', NUL, whitespace or control
// characters, the value without NUL (exec cannot pass one) and not
// RedactedEnvValue.
func env(p *Problems, field string, list []string, total *int) {
	if len(list) > MaxEnv {
		p.Add(field, "%d entries, at most %d", len(list), MaxEnv)
	}
	for i, e := range list {
		f := func() string { return fmt.Sprintf("%s[%d]", field, i) }
		*total += len(e) + 1
		if len(e) > MaxEnvEntry {
			p.Add(f(), "%d bytes long, at most %d", len(e), MaxEnvEntry)
			continue
		}
		k, v, ok := strings.Cut(e, "=")
		switch {
		case !ok || k == "":
			p.Add(f(), "%q must be KEY=VALUE", e)
		case !validEnvKey(k):
			p.Add(f(), "key %q must not contain whitespace, NUL or control characters", k)
		case strings.IndexByte(v, 0) >= 0:
			p.Add(f(), "the value of %s contains a NUL byte", k)
		case v == RedactedEnvValue:
			p.Add(f(), "the value of %s is %s, what a viewer token reads in place of a value: "+
				"a spec read with a viewer token cannot be written back; set the value itself", k, RedactedEnvValue)
		}
	}
}

func validEnvKey(k string) bool {
	for _, r := range k {
		if r <= ' ' || r == 0x7f || r == utf8.RuneError || (r >= 0x80 && r <= 0x9f) || r == '=' {
			return false
		}
	}
	return true
}

// mounts: bind or tmpfs; targets absolute, clean, unique and never over
// the container's /proc, /sys or /dev (which the runtime mounts) or its
// root; bind sources absolute and clean (and, on the agent, away from the
// node's data dir).
func mounts(p *Problems, field string, ms []*shoalv1.Mount, node Node) {
	if len(ms) > MaxMounts {
		p.Add(field, "%d mounts, at most %d", len(ms), MaxMounts)
	}
	seen := map[string]int{}
	for i, m := range ms {
		mf := fmt.Sprintf("%s[%d]", field, i)
		switch m.GetType() {
		case "bind":
			if err := BindSource(m.GetSource(), node.DataDir); err != nil {
				p.Add(mf+".source", "%v", err)
			}
		case "tmpfs":
			if m.GetSource() != "" {
				p.Add(mf+".source", "must be empty for a tmpfs, got %q", m.GetSource())
			}
		default:
			p.Add(mf+".type", "must be bind or tmpfs, got %q", m.GetType())
		}
		t := m.GetTarget()
		if err := MountTarget(t); err != nil {
			p.Add(mf+".target", "%v", err)
			continue
		}
		if j, dup := seen[t]; dup {
			p.Add(mf+".target", "%q is also the target of %s[%d]", t, field, j)
			continue
		}
		seen[t] = i
	}
}

// reservedTargets are mounted by the runtime itself.
var reservedTargets = []string{"/proc", "/sys", "/dev"}

// MountTarget checks a mount target.
func MountTarget(t string) error {
	if err := absPath(t); err != nil {
		return err
	}
	if t == "/" {
		return errorf("cannot mount over the container's root")
	}
	for _, r := range reservedTargets {
		if t == r || strings.HasPrefix(t, r+"/") {
			return errorf("%q is inside %s, which the runtime provides", t, r)
		}
	}
	return nil
}

// BindSource checks a bind mount's source. With a dataDir (the agent's),
// a source inside it or one of its parents is refused: it would hand the
// node's keys and state to the container.
func BindSource(src, dataDir string) error {
	if err := absPath(src); err != nil {
		return err
	}
	if dataDir == "" {
		return nil
	}
	if within(src, dataDir) {
		return errorf("%q is inside the node's data dir", src)
	}
	if within(dataDir, src) {
		return errorf("%q contains the node's data dir", src)
	}
	return nil
}

// within says whether p is dir or under it (both clean and absolute).
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// absPath: absolute, clean (no "..", ".", "//" or trailing '/'), no NUL,
// at most MaxPath bytes.
func absPath(s string) error {
	switch {
	case s == "":
		return errorf("required")
	case len(s) > MaxPath:
		return errorf("%d bytes long, at most %d", len(s), MaxPath)
	case strings.IndexByte(s, 0) >= 0:
		return errorf("contains a NUL byte")
	case !path.IsAbs(s):
		return errorf("%q must be an absolute path", s)
	}
	for _, el := range strings.Split(s, "/") {
		if el == ".." {
			return errorf("%q must not contain '..'", s)
		}
	}
	if c := path.Clean(s); c != s {
		return errorf("%q is not a clean path (write %q)", s, c)
	}
	return nil
}

func caps(p *Problems, field string, list []string) {
	if len(list) > MaxCaps {
		p.Add(field, "%d entries, at most %d", len(list), MaxCaps)
		return
	}
	for i, c := range list {
		if !KnownCapability(c) {
			p.Add(fmt.Sprintf("%s[%d]", field, i), "unknown capability %q", c)
		}
	}
}

func resources(p *Problems, field string, r *shoalv1.ResourceRequirements) {
	if r == nil {
		return
	}
	res, lim := r.GetReservations(), r.GetLimits()
	rf, lf := field+".reservations", field+".limits"
	for _, x := range []struct {
		f string
		r *shoalv1.Resources
	}{{rf, res}, {lf, lim}} {
		inRange(p, x.f+".nano_cpus", x.r.GetNanoCpus(), MaxNanoCPUs, "4096 CPUs")
		inRange(p, x.f+".memory_bytes", x.r.GetMemoryBytes(), MaxMemoryBytes, "1 PiB")
		inRange(p, x.f+".pids", x.r.GetPids(), MaxPids, "the kernel's PID_MAX_LIMIT")
	}
	if n := lim.GetNanoCpus(); n > 0 && n < MinNanoCPUs {
		p.Add(lf+".nano_cpus", "must be at least %d (0.01 CPU: a 1 ms quota per 100 ms), got %d", int64(MinNanoCPUs), n)
	}
	if m := lim.GetMemoryBytes(); m > 0 && m < MinMemoryBytes {
		p.Add(lf+".memory_bytes", "must be at least 6MiB (%d bytes), got %d bytes", MinMemoryBytes, m)
	}
	if l, rv := lim.GetMemoryBytes(), res.GetMemoryBytes(); l > 0 && rv > l {
		p.Add(rf+".memory_bytes", "reservation %d exceeds the limit %d", rv, l)
	}
	if l, rv := lim.GetNanoCpus(), res.GetNanoCpus(); l > 0 && rv > l {
		p.Add(rf+".nano_cpus", "reservation %d exceeds the limit %d", rv, l)
	}
	if res.GetPids() > 0 {
		p.Add(rf+".pids", "a pids reservation means nothing; set limits.pids")
	}
}

func inRange(p *Problems, field string, v, hi int64, what string) {
	switch {
	case v < 0:
		p.Add(field, "must be >= 0, got %d", v)
	case v > hi:
		p.Add(field, "must be at most %d (%s), got %d", hi, what, v)
	}
}

func labels(p *Problems, field string, m map[string]string) {
	if len(m) > MaxLabels {
		p.Add(field, "%d labels, at most %d", len(m), MaxLabels)
	}
	if len(m) == 0 {
		return
	}
	// Sorted by key so that the same spec always reads the same.
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := m[k]
		// The field path is formatted only for a problem: a valid
		// label (every label of nearly every write) costs no allocation.
		f := func() string { return fmt.Sprintf("%s[%q]", field, clip(k)) }
		switch {
		case !validLabelKey(k):
			p.Add(f(), "invalid label key (letters, digits, '.', '_', '/', '-'; starts with a letter or digit; at most %d bytes)", MaxLabelKey)
		case len(v) > MaxLabelValue:
			p.Add(f(), "value is %d bytes long, at most %d", len(v), MaxLabelValue)
		case strings.IndexByte(v, 0) >= 0 || !utf8.ValidString(v):
			p.Add(f(), "value must be UTF-8 without NUL")
		}
	}
}

func validLabelKey(k string) bool {
	if k == "" || len(k) > MaxLabelKey || !isAlnum(k[0]) {
		return false
	}
	for i := 1; i < len(k); i++ {
		if c := k[i]; !isAlnum(c) && c != '.' && c != '_' && c != '/' && c != '-' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// ValidName is the rule for service, node and network names: 1-63 of
// letters, digits, '_', '.', '-', starting with a letter or digit.
func ValidName(n string) bool {
	if n == "" || len(n) > 63 || !isAlnum(n[0]) {
		return false
	}
	for i := 1; i < len(n); i++ {
		if c := n[i]; !isAlnum(c) && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// Hostname checks an RFC 1123 host name short enough for the kernel's
// UTS name: dot-separated labels of letters, digits and '-', neither
// starting nor ending with '-', each 1-63 bytes, at most MaxHostname in all.
func Hostname(h string) error {
	if len(h) > MaxHostname {
		return errorf("%q is %d bytes long, at most %d", h, len(h), MaxHostname)
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || l[0] == '-' || l[len(l)-1] == '-' {
			return errorf("%q is not an RFC 1123 host name (empty label, or one starting or ending with '-')", h)
		}
		for i := 0; i < len(l); i++ {
			if !isAlnum(l[i]) && l[i] != '-' {
				return errorf("%q is not an RFC 1123 host name (only letters, digits, '-' and '.')", h)
			}
		}
	}
	return nil
}

// User checks "name", "uid", "name:group", "uid:gid" (and mixes): a name
// of letters, digits, '.', '_', '-' not starting with '-', at most
// MaxUserName bytes; an id at most MaxUID.
func User(u string) error {
	usr, grp, hasGroup := strings.Cut(u, ":")
	if err := userPart(usr); err != nil {
		return errorf("user %q: %v", u, err)
	}
	if hasGroup {
		if err := userPart(grp); err != nil {
			return errorf("group in %q: %v", u, err)
		}
	}
	return nil
}

func userPart(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if s[0] >= '0' && s[0] <= '9' {
		n, err := strconv.ParseUint(s, 10, 64)
		switch {
		case err == nil && n > MaxUID:
			return fmt.Errorf("id %d is above %d", n, uint64(MaxUID))
		case err == nil:
			return nil
		case errors.Is(err, strconv.ErrRange):
			// All digits, too many for any id.
			return fmt.Errorf("id %s is above %d", s, uint64(MaxUID))
		}
	}
	if len(s) > MaxUserName {
		return fmt.Errorf("name is %d bytes long, at most %d", len(s), MaxUserName)
	}
	if s[0] == '-' {
		return errors.New("a name must not start with '-'")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return errors.New("a name is letters, digits, '.', '_' and '-'")
		}
	}
	return nil
}

// ImageRef checks an image reference (name[:tag][@digest], a registry
// host allowed) with go-containerregistry's parser, the one the agent
// pulls with.
func ImageRef(ref string) error {
	if _, err := name.ParseReference(ref); err != nil {
		return errorf("%q is not a valid image reference: %v", ref, err)
	}
	return nil
}

// capabilities are the Linux capability names (without CAP_) a task may
// add or drop; "ALL" stands for every one.
var capabilities = func() map[string]bool {
	m := map[string]bool{}
	for _, c := range strings.Fields(`CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
		LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO
		SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE
		AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF
		CHECKPOINT_RESTORE ALL`) {
		m[c] = true
	}
	return m
}()

// KnownCapability says whether c ("NET_ADMIN", "cap_net_admin", "ALL")
// names a capability.
func KnownCapability(c string) bool {
	return capabilities[strings.TrimPrefix(strings.ToUpper(c), "CAP_")]
}

// NodeSpec checks a node spec update.
func NodeSpec(spec *shoalv1.NodeSpec) Problems {
	var p Problems
	if spec == nil {
		p.Add("spec", "required")
		return p
	}
	if n := spec.GetName(); n != "" && !ValidName(n) {
		p.Add("spec.name", "%q is not a valid name", n)
	}
	labels(&p, "spec.labels", spec.GetLabels())
	switch spec.GetDesiredRole() {
	case shoalv1.NodeRole_NODE_ROLE_WORKER, shoalv1.NodeRole_NODE_ROLE_MANAGER:
	default:
		p.Add("spec.desired_role", "must be worker or manager")
	}
	switch spec.GetAvailability() {
	case shoalv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE, shoalv1.NodeAvailability_NODE_AVAILABILITY_PAUSE,
		shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN:
	default:
		p.Add("spec.availability", "unknown availability %d", spec.GetAvailability())
	}
	return p
}
