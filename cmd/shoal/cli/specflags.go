package cli

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// specFlags are the task and service flags shared by create and update.
// Update applies only the flags that were given.
type specFlags struct {
	replicas                         int64
	mode                             string
	env, labels, constraints         []string
	envAdd, envRm, labelAdd, labelRm []string
	constraintAdd, constraintRm      []string
	reserveCPU, reserveMem           string
	limitCPU, limitMem               string
	limitPids                        int64
	restartCond                      string
	restartDelay                     time.Duration
	restartMax                       int64
	workdir, user, hostname, stopSig string
	readOnly                         bool
	stopGrace                        time.Duration
	image                            string
	maxPerNode                       int64
	mounts, capAdd, capDrop          []string
	entrypoint                       string
	args                             string
	initProc                         bool
	networks, networkAdd, networkRm  []string
	// networkRmIDs: the ids --network-rm names resolve to (update looks
	// them up, since a stored spec holds network ids).
	networkRmIDs map[string]string
	endpointMode string
	// publish replaces the published ports; publishAdd/publishRm edit
	// them on update.
	publish, publishAdd, publishRm []string
	job                            jobFlags // jobflags.go
	placement                      placementFlags
	health                         healthFlags
	rollout                        rolloutFlags // rolloutflags.go
}

func (f *specFlags) bind(fs *pflag.FlagSet, update bool) {
	f.placement.bind(fs, update)
	fs.Int64Var(&f.replicas, "replicas", 1, "number of tasks (replicated mode)")
	if update {
		fs.StringVar(&f.image, "image", "", "new image")
		fs.StringArrayVar(&f.envAdd, "env-add", nil, "add or change an environment variable K=V")
		fs.StringArrayVar(&f.envRm, "env-rm", nil, "remove an environment variable")
		fs.StringArrayVar(&f.labelAdd, "label-add", nil, "add or change a service label K=V")
		fs.StringArrayVar(&f.labelRm, "label-rm", nil, "remove a service label")
		fs.StringArrayVar(&f.constraintAdd, "constraint-add", nil, "add a placement constraint")
		fs.StringArrayVar(&f.constraintRm, "constraint-rm", nil, "remove a placement constraint")
		fs.StringArrayVar(&f.networkAdd, "network-add", nil, "attach to a network: NAME[,alias=A...] (repeatable)")
		fs.StringArrayVar(&f.networkRm, "network-rm", nil, "detach from a network (name or id; repeatable)")
		fs.StringArrayVar(&f.publishAdd, "publish-add", nil, "publish a port (same syntax as --publish; replaces the same PUBLISHED/protocol; repeatable)")
		fs.StringArrayVar(&f.publishRm, "publish-rm", nil, "stop publishing a port: PUBLISHED[/udp] (repeatable)")
		fs.StringVar(&f.args, "args", "", `new args for the command, split like a shell does ('sh -c "echo hi"'); "" clears them`)
	} else {
		fs.StringVar(&f.mode, "mode", "replicated", "replicated, global, replicated-job or global-job")
		fs.StringArrayVarP(&f.env, "env", "e", nil, "environment variable K=V (repeatable)")
		fs.StringArrayVarP(&f.labels, "label", "l", nil, "service label K=V (repeatable)")
		fs.StringArrayVar(&f.networks, "network", nil, "attach to a network: NAME[,alias=A...] (repeatable)")
		fs.StringArrayVar(&f.constraints, "constraint", nil, "placement constraint, e.g. node.role==worker (repeatable)")
	}
	fs.StringVar(&f.reserveCPU, "reserve-cpu", "", "CPUs reserved per task, e.g. 0.5")
	fs.StringVar(&f.reserveMem, "reserve-memory", "", "memory reserved per task, e.g. 256m")
	fs.StringVar(&f.limitCPU, "limit-cpu", "", "CPU limit per task")
	fs.StringVar(&f.limitMem, "limit-memory", "", "memory limit per task, e.g. 512m")
	fs.Int64Var(&f.limitPids, "limit-pids", 0, "process limit per task")
	fs.Int64Var(&f.maxPerNode, "replicas-max-per-node", 0, "at most this many tasks per node (0: no limit)")
	fs.StringVar(&f.restartCond, "restart-condition", "", "any, on-failure or none (default any)")
	fs.DurationVar(&f.restartDelay, "restart-delay", 0, "delay between restarts (default 5s)")
	fs.Int64Var(&f.restartMax, "restart-max-attempts", 0, "give up after this many restarts after the first run (0: never)")
	fs.StringVarP(&f.workdir, "workdir", "w", "", "working directory in the container")
	fs.StringVarP(&f.user, "user", "u", "", "user[:group] in the container")
	fs.StringVar(&f.hostname, "hostname", "", "container hostname")
	fs.BoolVar(&f.readOnly, "read-only", false, "mount the root filesystem read-only")
	fs.StringArrayVar(&f.mounts, "mount", nil, "type=bind,source=/host/path,target=/path[,readonly] or type=tmpfs,target=/path (repeatable; replaces the list on update)")
	fs.StringArrayVar(&f.capAdd, "cap-add", nil, "add a Linux capability to the default set, e.g. NET_ADMIN (repeatable)")
	fs.StringArrayVar(&f.capDrop, "cap-drop", nil, "drop a capability from the default set, or ALL (repeatable)")
	fs.StringVar(&f.entrypoint, "entrypoint", "", "command replacing the image's entrypoint (its args are the service's ARGs)")
	fs.StringVar(&f.stopSig, "stop-signal", "", "signal that stops the container (default: the image's, else SIGTERM)")
	fs.BoolVar(&f.initProc, "init", false, "run a tiny init as PID 1 that forwards signals to the command and reaps zombies (--init=false turns it off)")
	fs.DurationVar(&f.stopGrace, "stop-grace-period", 0, "time before SIGKILL (default 10s)")
	fs.StringArrayVarP(&f.publish, "publish", "p", nil, "publish a port: PUBLISHED:TARGET[/udp] or published=P,target=T[,protocol=tcp|udp][,mode=ingress|host] (repeatable; replaces the list on update)")
	fs.StringVar(&f.endpointMode, "endpoint-mode", "", "vip (a virtual address per network, the default) or dnsrr (DNS answers the task addresses)")
	f.job.bind(fs)
	f.health.bind(fs)
	f.rollout.bind(fs, update)
}

// parseNetworkFlag reads NAME[,alias=A...] or name=NAME[,alias=A...]
// (docker's long form; target= is accepted too).
func parseNetworkFlag(flag, v string) (*shoalv1.NetworkAttachmentConfig, error) {
	out := &shoalv1.NetworkAttachmentConfig{}
	for i, part := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(part, "=")
		switch {
		case !ok && i == 0:
			out.Target = part
		case ok && (k == "name" || k == "target"):
			out.Target = val
		case ok && k == "alias":
			if val == "" {
				return nil, fmt.Errorf("%s: empty alias in %q", flag, v)
			}
			out.Aliases = append(out.Aliases, val)
		default:
			return nil, fmt.Errorf("%s: %q: want NAME[,alias=A...]", flag, v)
		}
	}
	if out.Target == "" {
		return nil, fmt.Errorf("%s: %q names no network", flag, v)
	}
	return out, nil
}

func kvList(flag string, items []string) (map[string]string, error) {
	m := map[string]string{}
	for _, it := range items {
		k, v, ok := strings.Cut(it, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s: %q must be KEY=VALUE", flag, it)
		}
		m[k] = v
	}
	return m, nil
}

// apply writes the flags that were set into spec (all of them on create).
func (f *specFlags) apply(fs *pflag.FlagSet, spec *shoalv1.ServiceSpec) error {
	set := func(name string) bool { return fs.Changed(name) }
	if err := f.placement.apply(fs, spec); err != nil {
		return err
	}
	if spec.Task == nil {
		spec.Task = &shoalv1.TaskSpec{}
	}
	t := spec.Task
	if t.Container == nil {
		t.Container = &shoalv1.ContainerSpec{}
	}
	c := t.Container
	if set("mode") {
		switch f.mode {
		case "replicated":
			spec.Mode = shoalv1.ServiceMode_SERVICE_MODE_REPLICATED
		case "global":
			spec.Mode = shoalv1.ServiceMode_SERVICE_MODE_GLOBAL
			if !set("replicas") {
				spec.Replicas = 0
			}
		default:
			m, ok := jobMode(f.mode)
			if !ok {
				return fmt.Errorf("--mode: want replicated, global, replicated-job or global-job, got %q", f.mode)
			}
			spec.Mode = m
			if !set("replicas") {
				spec.Replicas = 0
			}
		}
	}
	if set("replicas") {
		if spec.Mode == shoalv1.ServiceMode_SERVICE_MODE_GLOBAL {
			return fmt.Errorf("--replicas: a global service runs one task per node")
		}
		spec.Replicas = f.replicas
	}
	if set("image") {
		c.Image = f.image
	}
	if set("env") {
		c.Env = append([]string(nil), f.env...)
	}
	if set("env-add") || set("env-rm") {
		drop := map[string]bool{}
		for _, e := range f.envRm {
			drop[e] = true
		}
		for _, e := range f.envAdd {
			k, _, _ := strings.Cut(e, "=")
			drop[k] = true
		}
		var env []string
		for _, e := range c.Env {
			k, _, _ := strings.Cut(e, "=")
			if !drop[k] {
				env = append(env, e)
			}
		}
		c.Env = append(env, f.envAdd...)
	}
	if set("label") {
		m, err := kvList("--label", f.labels)
		if err != nil {
			return err
		}
		spec.Labels = m
	}
	if set("label-add") || set("label-rm") {
		m, err := kvList("--label-add", f.labelAdd)
		if err != nil {
			return err
		}
		if spec.Labels == nil {
			spec.Labels = map[string]string{}
		}
		for _, k := range f.labelRm {
			delete(spec.Labels, k)
		}
		for k, v := range m {
			spec.Labels[k] = v
		}
	}
	if set("constraint") || set("constraint-add") || set("constraint-rm") || set("replicas-max-per-node") {
		if t.Placement == nil {
			t.Placement = &shoalv1.Placement{}
		}
	}
	if set("constraint") {
		t.Placement.Constraints = append([]string(nil), f.constraints...)
	}
	if set("constraint-add") || set("constraint-rm") {
		var out []string
		rm := map[string]bool{}
		for _, x := range f.constraintRm {
			rm[x] = true
		}
		for _, x := range t.Placement.Constraints {
			if !rm[x] {
				out = append(out, x)
			}
		}
		t.Placement.Constraints = append(out, f.constraintAdd...)
	}
	if set("replicas-max-per-node") {
		t.Placement.MaxReplicasPerNode = f.maxPerNode
	}
	res := func() *shoalv1.ResourceRequirements {
		if t.Resources == nil {
			t.Resources = &shoalv1.ResourceRequirements{}
		}
		if t.Resources.Reservations == nil {
			t.Resources.Reservations = &shoalv1.Resources{}
		}
		if t.Resources.Limits == nil {
			t.Resources.Limits = &shoalv1.Resources{}
		}
		return t.Resources
	}
	var err error
	if set("reserve-cpu") {
		if res().Reservations.NanoCpus, err = parseCPUs("--reserve-cpu", f.reserveCPU); err != nil {
			return err
		}
	}
	if set("reserve-memory") {
		if res().Reservations.MemoryBytes, err = parseSize("--reserve-memory", f.reserveMem); err != nil {
			return err
		}
	}
	if set("limit-cpu") {
		if res().Limits.NanoCpus, err = parseCPUs("--limit-cpu", f.limitCPU); err != nil {
			return err
		}
	}
	if set("limit-memory") {
		if res().Limits.MemoryBytes, err = parseSize("--limit-memory", f.limitMem); err != nil {
			return err
		}
	}
	if set("limit-pids") {
		res().Limits.Pids = f.limitPids
	}
	if set("restart-condition") || set("restart-delay") || set("restart-max-attempts") {
		if t.Restart == nil {
			t.Restart = &shoalv1.RestartPolicy{DelayMs: 5000}
		}
	}
	if set("restart-condition") {
		switch f.restartCond {
		case "any":
			t.Restart.Condition = shoalv1.RestartCondition_RESTART_CONDITION_ANY
		case "on-failure":
			t.Restart.Condition = shoalv1.RestartCondition_RESTART_CONDITION_ON_FAILURE
		case "none":
			t.Restart.Condition = shoalv1.RestartCondition_RESTART_CONDITION_NONE
		default:
			return fmt.Errorf("--restart-condition: want any, on-failure or none, got %q", f.restartCond)
		}
	}
	if set("restart-delay") {
		t.Restart.DelayMs = f.restartDelay.Milliseconds()
	}
	if set("restart-max-attempts") {
		t.Restart.MaxAttempts = f.restartMax
	}
	if set("workdir") {
		c.Workdir = f.workdir
	}
	if set("user") {
		c.User = f.user
	}
	if set("hostname") {
		c.Hostname = f.hostname
	}
	if set("read-only") {
		c.ReadOnly = f.readOnly
	}
	if set("mount") {
		c.Mounts = nil
		for _, m := range f.mounts {
			pm, err := parseMount(m)
			if err != nil {
				return err
			}
			c.Mounts = append(c.Mounts, pm)
		}
	}
	if set("cap-add") {
		c.CapAdd = append([]string(nil), f.capAdd...)
	}
	if set("cap-drop") {
		c.CapDrop = append([]string(nil), f.capDrop...)
	}
	if set("args") {
		args, err := splitWords(f.args)
		if err != nil {
			return fmt.Errorf("--args: %w", err)
		}
		c.Args = args
	}
	if set("entrypoint") {
		c.Command = strings.Fields(f.entrypoint)
	}
	if set("stop-signal") {
		c.StopSignal = f.stopSig
	}
	if err := f.health.apply(fs, c); err != nil {
		return err
	}
	if set("stop-grace-period") {
		c.StopGraceMs = f.stopGrace.Milliseconds()
	}
	if set("init") {
		c.Init = f.initProc
	}
	if set("network") {
		t.Networks = nil
		for _, v := range f.networks {
			n, err := parseNetworkFlag("--network", v)
			if err != nil {
				return err
			}
			t.Networks = append(t.Networks, n)
		}
	}
	if set("network-rm") {
		for _, v := range f.networkRm {
			id := f.networkRmIDs[v]
			before := len(t.Networks)
			t.Networks = slices.DeleteFunc(t.Networks, func(n *shoalv1.NetworkAttachmentConfig) bool {
				return n.GetTarget() == v || (id != "" && n.GetTarget() == id)
			})
			if len(t.Networks) == before {
				return fmt.Errorf("--network-rm: the service is not attached to %q", v)
			}
		}
	}
	if set("network-add") {
		for _, v := range f.networkAdd {
			n, err := parseNetworkFlag("--network-add", v)
			if err != nil {
				return err
			}
			t.Networks = append(t.Networks, n)
		}
	}
	if err := f.applyPublish(set, spec); err != nil {
		return err
	}
	if set("endpoint-mode") {
		switch f.endpointMode {
		case "vip", "dnsrr":
		default:
			return fmt.Errorf("--endpoint-mode: want vip or dnsrr, got %q", f.endpointMode)
		}
		if spec.Endpoint == nil {
			spec.Endpoint = &shoalv1.EndpointSpec{}
		}
		spec.Endpoint.Mode = f.endpointMode
	}
	f.rollout.apply(fs, spec)
	return f.job.apply(fs, spec)
}

// parseMount reads docker's --mount syntax: comma-separated key=value
// pairs (type, source|src, target|dst|destination, readonly|ro).
func parseMount(s string) (*shoalv1.Mount, error) {
	m := &shoalv1.Mount{Type: "bind"}
	for _, part := range strings.Split(s, ",") {
		k, v, hasV := strings.Cut(strings.TrimSpace(part), "=")
		switch strings.ToLower(k) {
		case "type":
			m.Type = v
		case "source", "src":
			m.Source = v
		case "target", "dst", "destination":
			m.Target = v
		case "readonly", "ro":
			m.ReadOnly = !hasV || v == "true" || v == "1"
		default:
			return nil, fmt.Errorf("--mount %q: unknown key %q (want type, source, target, readonly)", s, k)
		}
	}
	if m.Target == "" {
		return nil, fmt.Errorf("--mount %q: target is required", s)
	}
	return m, nil
}

// splitWords splits s into words as a POSIX shell does, without
// expansions: blanks separate words; single quotes keep everything
// literally; double quotes keep blanks, and a backslash in them escapes
// only $ ` " \ and a newline; a backslash outside quotes escapes the next
// character. "" and blanks give no words at all (docker's `--args ""`
// clears the args).
func splitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\\':
			if i+1 == len(s) {
				return nil, fmt.Errorf("%q: ends with an unescaped backslash", s)
			}
			i++
			cur.WriteByte(s[i])
			inWord = true
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("%q: unterminated single quote", s)
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("$`\"\\\n", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i == len(s) {
				return nil, fmt.Errorf("%q: unterminated double quote", s)
			}
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// patchFlags are the update flags a PatchService carries.
var patchFlags = map[string]bool{"label-add": true, "label-rm": true, "replicas": true}

// patchOnly returns the PatchService of an update whose only spec flags
// set are --label-add, --label-rm and --replicas (ok false when another
// one is set, or none of those). A key both added and removed ends added,
// as apply does it.
func (f *specFlags) patchOnly(fs *pflag.FlagSet) (req *shoalv1.PatchServiceRequest, ok bool, err error) {
	// Every spec flag, from the one list bind makes.
	var all specFlags
	names := pflag.NewFlagSet("spec", pflag.ContinueOnError)
	all.bind(names, true)
	other, some := false, false
	names.VisitAll(func(fl *pflag.Flag) {
		if fs.Changed(fl.Name) {
			some = some || patchFlags[fl.Name]
			other = other || !patchFlags[fl.Name]
		}
	})
	if other || !some {
		return nil, false, nil
	}
	req = &shoalv1.PatchServiceRequest{}
	if fs.Changed("label-add") {
		if req.LabelsAdd, err = kvList("--label-add", f.labelAdd); err != nil {
			return nil, false, err
		}
	}
	for _, k := range f.labelRm {
		if _, added := req.LabelsAdd[k]; !added {
			req.LabelsRm = append(req.LabelsRm, k)
		}
	}
	if fs.Changed("replicas") {
		req.Replicas = &f.replicas
	}
	return req, true, nil
}
