package controlapi

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/scheduler"
)

// fieldErrors collects every problem of a spec so that an operator sees them
// all at once, each with its field path.
type fieldErrors []string

func (f *fieldErrors) add(field, format string, args ...any) {
	*f = append(*f, field+": "+fmt.Sprintf(format, args...))
}

func (f fieldErrors) err() error {
	if len(f) == 0 {
		return nil
	}
	return invalidf("%s", strings.Join(f, "; "))
}

var (
	nameRE      = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)
	envKeyRE    = regexp.MustCompile(`^[^=\s]+$`)
	imageRefRE  = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._/:@+-]*$`)
	labelKeyRE  = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._/-]*$`)
	minMemLimit = int64(4 << 20)
)

// validateServiceSpec checks a service spec and returns every problem with
// its field path.
func validateServiceSpec(spec *shoalv1.ServiceSpec) error {
	var fe fieldErrors
	if spec == nil {
		fe.add("spec", "required")
		return fe.err()
	}
	switch {
	case spec.GetName() == "":
		fe.add("spec.name", "required")
	case !nameRE.MatchString(spec.GetName()):
		fe.add("spec.name", "%q is not a valid name (letters, digits, '_', '.', '-'; at most 63; starts with a letter or digit)", spec.GetName())
	}
	validateLabels(&fe, "spec.labels", spec.GetLabels())
	switch spec.GetMode() {
	case shoalv1.ServiceMode_SERVICE_MODE_REPLICATED:
		if spec.GetReplicas() < 0 {
			fe.add("spec.replicas", "must be >= 0, got %d", spec.GetReplicas())
		}
	case shoalv1.ServiceMode_SERVICE_MODE_GLOBAL:
		if spec.GetReplicas() != 0 {
			fe.add("spec.replicas", "must be unset for a global service, got %d", spec.GetReplicas())
		}
	default:
		fe.add("spec.mode", "unknown mode %d", spec.GetMode())
	}
	validateTaskSpec(&fe, "spec.task", spec.GetTask())
	validateUpdateConfig(&fe, "spec.update", spec.GetUpdate())
	validateUpdateConfig(&fe, "spec.rollback", spec.GetRollback())
	if ep := spec.GetEndpoint(); ep != nil {
		switch ep.GetMode() {
		case "", "vip", "dnsrr":
		default:
			fe.add("spec.endpoint.mode", "must be vip or dnsrr, got %q", ep.GetMode())
		}
		for i, p := range ep.GetPorts() {
			f := fmt.Sprintf("spec.endpoint.ports[%d]", i)
			if p.GetTargetPort() == 0 || p.GetTargetPort() > 65535 {
				fe.add(f+".target_port", "must be 1-65535, got %d", p.GetTargetPort())
			}
			if p.GetPublishedPort() > 65535 {
				fe.add(f+".published_port", "must be 0-65535, got %d", p.GetPublishedPort())
			}
			switch p.GetProtocol() {
			case "", "tcp", "udp":
			default:
				fe.add(f+".protocol", "must be tcp or udp, got %q", p.GetProtocol())
			}
		}
	}
	return fe.err()
}

func validateLabels(fe *fieldErrors, field string, labels map[string]string) {
	for k := range labels {
		if !labelKeyRE.MatchString(k) {
			fe.add(fmt.Sprintf("%s[%q]", field, k), "invalid label key")
		}
	}
}

func validateTaskSpec(fe *fieldErrors, field string, t *shoalv1.TaskSpec) {
	if t == nil || t.GetContainer() == nil {
		fe.add(field+".container.image", "required")
		return
	}
	c := t.GetContainer()
	cf := field + ".container"
	switch {
	case c.GetImage() == "":
		fe.add(cf+".image", "required")
	case !imageRefRE.MatchString(c.GetImage()):
		fe.add(cf+".image", "%q is not a valid image reference", c.GetImage())
	}
	for i, e := range c.GetEnv() {
		k, _, ok := strings.Cut(e, "=")
		if !ok || !envKeyRE.MatchString(k) {
			fe.add(fmt.Sprintf("%s.env[%d]", cf, i), "%q must be KEY=VALUE", e)
		}
	}
	if w := c.GetWorkdir(); w != "" && !path.IsAbs(w) {
		fe.add(cf+".workdir", "%q must be an absolute path", w)
	}
	for i, m := range c.GetMounts() {
		mf := fmt.Sprintf("%s.mounts[%d]", cf, i)
		switch m.GetType() {
		case "bind":
			if !path.IsAbs(m.GetSource()) {
				fe.add(mf+".source", "%q must be an absolute path", m.GetSource())
			}
		case "tmpfs":
		default:
			fe.add(mf+".type", "must be bind or tmpfs, got %q", m.GetType())
		}
		if !path.IsAbs(m.GetTarget()) {
			fe.add(mf+".target", "%q must be an absolute path", m.GetTarget())
		}
	}
	for i, cp := range c.GetCapAdd() {
		if !knownCapability(cp) {
			fe.add(fmt.Sprintf("%s.cap_add[%d]", cf, i), "unknown capability %q", cp)
		}
	}
	for i, cp := range c.GetCapDrop() {
		if !knownCapability(cp) {
			fe.add(fmt.Sprintf("%s.cap_drop[%d]", cf, i), "unknown capability %q", cp)
		}
	}
	if s := c.GetStopSignal(); s != "" && !validSignal(s) {
		fe.add(cf+".stop_signal", "unknown signal %q", s)
	}
	if c.GetStopGraceMs() < 0 {
		fe.add(cf+".stop_grace_ms", "must be >= 0, got %d", c.GetStopGraceMs())
	}
	validateLabels(fe, cf+".labels", c.GetLabels())

	if r := t.GetResources(); r != nil {
		res, lim := r.GetReservations(), r.GetLimits()
		rf, lf := field+".resources.reservations", field+".resources.limits"
		nonNegative(fe, rf, res)
		nonNegative(fe, lf, lim)
		if m := lim.GetMemoryBytes(); m > 0 && m < minMemLimit {
			fe.add(lf+".memory_bytes", "must be at least 4MiB, got %d bytes", m)
		}
		if l, rv := lim.GetMemoryBytes(), res.GetMemoryBytes(); l > 0 && rv > l {
			fe.add(rf+".memory_bytes", "reservation %d exceeds the limit %d", rv, l)
		}
		if l, rv := lim.GetNanoCpus(), res.GetNanoCpus(); l > 0 && rv > l {
			fe.add(rf+".nano_cpus", "reservation %d exceeds the limit %d", rv, l)
		}
	}
	if rp := t.GetRestart(); rp != nil {
		if rp.GetDelayMs() < 0 {
			fe.add(field+".restart.delay_ms", "must be >= 0, got %d", rp.GetDelayMs())
		}
		if rp.GetMaxAttempts() < 0 {
			fe.add(field+".restart.max_attempts", "must be >= 0, got %d", rp.GetMaxAttempts())
		}
		if rp.GetWindowMs() < 0 {
			fe.add(field+".restart.window_ms", "must be >= 0, got %d", rp.GetWindowMs())
		}
	}
	if p := t.GetPlacement(); p != nil {
		for i, expr := range p.GetConstraints() {
			if _, err := scheduler.ParseConstraint(expr); err != nil {
				fe.add(fmt.Sprintf("%s.placement.constraints[%d]", field, i), "%v", err)
			}
		}
		if p.GetMaxReplicasPerNode() < 0 {
			fe.add(field+".placement.max_replicas_per_node", "must be >= 0, got %d", p.GetMaxReplicasPerNode())
		}
	}
	for i, n := range t.GetNetworks() {
		if !nameRE.MatchString(n) {
			fe.add(fmt.Sprintf("%s.networks[%d]", field, i), "%q is not a valid network name", n)
		}
	}
}

func nonNegative(fe *fieldErrors, field string, r *shoalv1.Resources) {
	if r.GetNanoCpus() < 0 {
		fe.add(field+".nano_cpus", "must be >= 0, got %d", r.GetNanoCpus())
	}
	if r.GetMemoryBytes() < 0 {
		fe.add(field+".memory_bytes", "must be >= 0, got %d", r.GetMemoryBytes())
	}
	if r.GetPids() < 0 {
		fe.add(field+".pids", "must be >= 0, got %d", r.GetPids())
	}
}

func validateUpdateConfig(fe *fieldErrors, field string, u *shoalv1.UpdateConfig) {
	if u == nil {
		return
	}
	if u.GetParallelism() < 0 {
		fe.add(field+".parallelism", "must be >= 0, got %d", u.GetParallelism())
	}
	if u.GetDelayMs() < 0 {
		fe.add(field+".delay_ms", "must be >= 0, got %d", u.GetDelayMs())
	}
	switch u.GetFailureAction() {
	case "", "pause", "continue", "rollback":
	default:
		fe.add(field+".failure_action", "must be pause, continue or rollback, got %q", u.GetFailureAction())
	}
	switch u.GetOrder() {
	case "", "stop-first", "start-first":
	default:
		fe.add(field+".order", "must be stop-first or start-first, got %q", u.GetOrder())
	}
}

// stopSignals are the signals a stop_signal may name.
var stopSignals = map[string]bool{
	"HUP": true, "INT": true, "QUIT": true, "KILL": true, "USR1": true, "USR2": true,
	"TERM": true, "WINCH": true, "PWR": true, "STOP": true,
}

func validSignal(s string) bool {
	return stopSignals[strings.TrimPrefix(strings.ToUpper(s), "SIG")]
}

// validateNodeSpec checks a node spec update.
func validateNodeSpec(spec *shoalv1.NodeSpec) error {
	var fe fieldErrors
	if spec == nil {
		fe.add("spec", "required")
		return fe.err()
	}
	if n := spec.GetName(); n != "" && !nameRE.MatchString(n) {
		fe.add("spec.name", "%q is not a valid name", n)
	}
	validateLabels(&fe, "spec.labels", spec.GetLabels())
	switch spec.GetDesiredRole() {
	case shoalv1.NodeRole_NODE_ROLE_WORKER, shoalv1.NodeRole_NODE_ROLE_MANAGER:
	default:
		fe.add("spec.desired_role", "must be worker or manager")
	}
	switch spec.GetAvailability() {
	case shoalv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE, shoalv1.NodeAvailability_NODE_AVAILABILITY_PAUSE,
		shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN:
	default:
		fe.add("spec.availability", "unknown availability %d", spec.GetAvailability())
	}
	return fe.err()
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

func knownCapability(c string) bool {
	return capabilities[strings.TrimPrefix(strings.ToUpper(c), "CAP_")]
}
