package specrules

import (
	"fmt"
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func validService() *shoalv1.ServiceSpec {
	return &shoalv1.ServiceSpec{
		Name:     "web",
		Replicas: 3,
		Task:     &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:latest", Env: []string{"A=1"}}},
		Update:   &shoalv1.UpdateConfig{Parallelism: 1, FailureAction: "pause", Order: "stop-first"},
	}
}

func TestService(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name   string
		mutate func(s *shoalv1.ServiceSpec)
		want   []string // substrings of the error; none = valid
	}{
		{"valid", func(*shoalv1.ServiceSpec) {}, nil},
		// env
		{"env without =", func(s *shoalv1.ServiceSpec) { s.Task.Container.Env = []string{"A=1", "NOVALUE"} }, []string{"spec.task.container.env[1]: \"NOVALUE\" must be KEY=VALUE"}},
		{"env empty key", func(s *shoalv1.ServiceSpec) { s.Task.Container.Env = []string{"=x"} }, []string{"env[0]", "KEY=VALUE"}},
		{"env NUL in key", func(s *shoalv1.ServiceSpec) { s.Task.Container.Env = []string{"A\x00B=1"} }, []string{"env[0]: key", "NUL or control"}},
		{"env control in key", func(s *shoalv1.ServiceSpec) { s.Task.Container.Env = []string{"A=1", "B=2", "C=3", "D\nE=1"} }, []string{"spec.task.container.env[3]: key"}},
		{"env space in key", func(s *shoalv1.ServiceSpec) { s.Task.Container.Env = []string{"A B=1"} }, []string{"env[0]: key"}},
		{"env NUL in value", func(s *shoalv1.ServiceSpec) { s.Task.Container.Env = []string{"A=x\x00y"} }, []string{"env[0]: the value of A contains a NUL"}},
		{"env redacted placeholder written back", func(s *shoalv1.ServiceSpec) { s.Task.Container.Env = []string{"A=1", "PASSWORD=<redacted>"} }, []string{"spec.task.container.env[1]: the value of PASSWORD is <redacted>", "viewer token"}},
		{"env = in value is fine", func(s *shoalv1.ServiceSpec) { s.Task.Container.Env = []string{"A=b=c", "UNICODE_KEY_é=1"} }, nil},
		{"env too many", func(s *shoalv1.ServiceSpec) {
			s.Task.Container.Env = nil
			for i := range MaxEnv + 1 {
				s.Task.Container.Env = append(s.Task.Container.Env, fmt.Sprintf("K%d=v", i))
			}
		}, []string{"spec.task.container.env: 1001 entries, at most 1000"}},
		{"env entry too big", func(s *shoalv1.ServiceSpec) { s.Task.Container.Env = []string{"A=" + long(MaxEnvEntry)} }, []string{"env[0]: 32770 bytes long"}},
		{"process too big", func(s *shoalv1.ServiceSpec) {
			s.Task.Container.Env = nil
			for i := range 9 {
				s.Task.Container.Env = append(s.Task.Container.Env, fmt.Sprintf("K%d=%s", i, long(30<<10)))
			}
		}, []string{"command, args and env take", "at most 262144"}},
		{"arg with NUL", func(s *shoalv1.ServiceSpec) { s.Task.Container.Args = []string{"ok", "a\x00b"} }, []string{"spec.task.container.args[1]: contains a NUL"}},
		// mounts
		{"mount target relative", func(s *shoalv1.ServiceSpec) {
			s.Task.Container.Mounts = []*shoalv1.Mount{{Type: "tmpfs", Target: "data"}}
		}, []string{"mounts[0].target: \"data\" must be an absolute path"}},
		{"mount target root", func(s *shoalv1.ServiceSpec) {
			s.Task.Container.Mounts = []*shoalv1.Mount{{Type: "tmpfs", Target: "/"}}
		}, []string{"mounts[0].target: cannot mount over the container's root"}},
		{"mount target /proc /sys /dev and under", func(s *shoalv1.ServiceSpec) {
			s.Task.Container.Mounts = []*shoalv1.Mount{{Type: "tmpfs", Target: "/proc"}, {Type: "tmpfs", Target: "/sys/fs/cgroup"}, {Type: "tmpfs", Target: "/dev/shm"}}
		}, []string{"mounts[0].target", "mounts[1].target", "mounts[2].target", "which the runtime provides"}},
		{"mount target like /devices is fine", func(s *shoalv1.ServiceSpec) {
			s.Task.Container.Mounts = []*shoalv1.Mount{{Type: "tmpfs", Target: "/devices"}, {Type: "tmpfs", Target: "/process"}}
		}, nil},
		{"mount target ..", func(s *shoalv1.ServiceSpec) {
			s.Task.Container.Mounts = []*shoalv1.Mount{{Type: "tmpfs", Target: "/data/../proc"}}
		}, []string{"mounts[0].target", "must not contain '..'"}},
		{"mount target unclean", func(s *shoalv1.ServiceSpec) {
			s.Task.Container.Mounts = []*shoalv1.Mount{{Type: "tmpfs", Target: "/data/"}}
		}, []string{"mounts[0].target", "not a clean path"}},
		{"mount target duplicate", func(s *shoalv1.ServiceSpec) {
			s.Task.Container.Mounts = []*shoalv1.Mount{{Type: "tmpfs", Target: "/a"}, {Type: "bind", Source: "/srv", Target: "/a"}}
		}, []string{"spec.task.container.mounts[1].target: \"/a\" is also the target of spec.task.container.mounts[0]"}},
		{"bind source relative or with ..", func(s *shoalv1.ServiceSpec) {
			s.Task.Container.Mounts = []*shoalv1.Mount{{Type: "bind", Source: "srv", Target: "/a"}, {Type: "bind", Source: "/srv/../etc", Target: "/b"}}
		}, []string{"mounts[0].source", "mounts[1].source"}},
		{"tmpfs with a source", func(s *shoalv1.ServiceSpec) {
			s.Task.Container.Mounts = []*shoalv1.Mount{{Type: "tmpfs", Source: "/x", Target: "/a"}}
		}, []string{"mounts[0].source: must be empty for a tmpfs"}},
		{"unknown mount type", func(s *shoalv1.ServiceSpec) {
			s.Task.Container.Mounts = []*shoalv1.Mount{{Type: "nfs", Target: "/a"}}
		}, []string{"mounts[0].type: must be bind or tmpfs"}},
		// labels
		{"label key", func(s *shoalv1.ServiceSpec) { s.Labels = map[string]string{"-x": "1"} }, []string{`spec.labels["-x"]: invalid label key`}},
		{"label value too big", func(s *shoalv1.ServiceSpec) {
			s.Task.Container.Labels = map[string]string{"k": long(MaxLabelValue + 1)}
		}, []string{`spec.task.container.labels["k"]: value is 4097 bytes long`}},
		{"too many labels", func(s *shoalv1.ServiceSpec) {
			s.Labels = map[string]string{}
			for i := range MaxLabels + 1 {
				s.Labels[fmt.Sprint("k", i)] = "v"
			}
		}, []string{"spec.labels: 65 labels, at most 64"}},
		// hostname
		{"hostname ok", func(s *shoalv1.ServiceSpec) { s.Task.Container.Hostname = "web-1.example" }, nil},
		{"hostname underscore", func(s *shoalv1.ServiceSpec) { s.Task.Container.Hostname = "web_1" }, []string{"spec.task.container.hostname", "RFC 1123"}},
		{"hostname leading dash", func(s *shoalv1.ServiceSpec) { s.Task.Container.Hostname = "-web" }, []string{"hostname", "RFC 1123"}},
		{"hostname empty label", func(s *shoalv1.ServiceSpec) { s.Task.Container.Hostname = "a..b" }, []string{"hostname", "empty label"}},
		{"hostname too long", func(s *shoalv1.ServiceSpec) { s.Task.Container.Hostname = long(64) }, []string{"hostname", "at most 63"}},
		// user
		{"users ok", func(s *shoalv1.ServiceSpec) { s.Task.Container.User = "app:1000" }, nil},
		{"user uid:gid", func(s *shoalv1.ServiceSpec) { s.Task.Container.User = "1000:1000" }, nil},
		{"user empty group", func(s *shoalv1.ServiceSpec) { s.Task.Container.User = "app:" }, []string{"spec.task.container.user", "group", "empty"}},
		{"user bad char", func(s *shoalv1.ServiceSpec) { s.Task.Container.User = "a/b" }, []string{"user", "letters, digits"}},
		{"uid too big", func(s *shoalv1.ServiceSpec) { s.Task.Container.User = "4294967295" }, []string{"user", "above 4294967294"}},
		// Past uint64: not a name either (the runtime would look it up in
		// /etc/passwd at every start and fail there).
		{"uid past uint64", func(s *shoalv1.ServiceSpec) { s.Task.Container.User = "99999999999999999999" }, []string{"spec.task.container.user", "above 4294967294"}},
		{"gid past uint64", func(s *shoalv1.ServiceSpec) { s.Task.Container.User = "0:99999999999999999999" }, []string{"spec.task.container.user", "group", "above 4294967294"}},
		{"user leading dash", func(s *shoalv1.ServiceSpec) { s.Task.Container.User = "-x" }, []string{"user", "start with '-'"}},
		// restart
		{"restart condition", func(s *shoalv1.ServiceSpec) { s.Task.Restart = &shoalv1.RestartPolicy{Condition: 9} }, []string{"spec.task.restart.condition: unknown condition 9"}},
		{"restart delay too long", func(s *shoalv1.ServiceSpec) {
			s.Task.Restart = &shoalv1.RestartPolicy{DelayMs: 1 << 62, WindowMs: -1}
		}, []string{"spec.task.restart.delay_ms: must be at most", "spec.task.restart.window_ms: must be >= 0"}},
		{"restart attempts negative", func(s *shoalv1.ServiceSpec) { s.Task.Restart = &shoalv1.RestartPolicy{MaxAttempts: -1} }, []string{"spec.task.restart.max_attempts: must be 0 (unlimited) to 1000, got -1"}},
		{"restart attempts too many", func(s *shoalv1.ServiceSpec) { s.Task.Restart = &shoalv1.RestartPolicy{MaxAttempts: 1_000_001} }, []string{"spec.task.restart.max_attempts: must be 0 (unlimited) to 1000, got 1000001"}},
		// image
		{"image tag+digest", func(s *shoalv1.ServiceSpec) {
			s.Task.Container.Image = "registry.example:5000/team/web:1.2@sha256:" + strings.Repeat("ab", 32)
		}, nil},
		{"image upper case", func(s *shoalv1.ServiceSpec) { s.Task.Container.Image = "Web" }, []string{"spec.task.container.image", "not a valid image reference"}},
		{"image bad digest", func(s *shoalv1.ServiceSpec) { s.Task.Container.Image = "web@sha256:nope" }, []string{"image", "not a valid image reference"}},
		{"image spaces", func(s *shoalv1.ServiceSpec) { s.Task.Container.Image = "web app" }, []string{"image"}},
		// resources
		{"cpu limit below 1 ms quota", func(s *shoalv1.ServiceSpec) {
			s.Task.Resources = &shoalv1.ResourceRequirements{Limits: &shoalv1.Resources{NanoCpus: 9_999_999}}
		}, []string{"spec.task.resources.limits.nano_cpus: must be at least 10000000"}},
		{"cpu limit smallest", func(s *shoalv1.ServiceSpec) {
			s.Task.Resources = &shoalv1.ResourceRequirements{Limits: &shoalv1.Resources{NanoCpus: MinNanoCPUs}}
		}, nil},
		{"cpu limit overflowing the quota", func(s *shoalv1.ServiceSpec) {
			s.Task.Resources = &shoalv1.ResourceRequirements{Limits: &shoalv1.Resources{NanoCpus: 1 << 62}, Reservations: &shoalv1.Resources{NanoCpus: 1 << 62}}
		}, []string{"limits.nano_cpus: must be at most", "reservations.nano_cpus: must be at most"}},
		{"memory below the one minimum", func(s *shoalv1.ServiceSpec) {
			s.Task.Resources = &shoalv1.ResourceRequirements{Limits: &shoalv1.Resources{MemoryBytes: 5 << 20}}
		}, []string{"spec.task.resources.limits.memory_bytes: must be at least 6MiB"}},
		{"memory at the minimum", func(s *shoalv1.ServiceSpec) {
			s.Task.Resources = &shoalv1.ResourceRequirements{Limits: &shoalv1.Resources{MemoryBytes: MinMemoryBytes}}
		}, nil},
		{"pids too many", func(s *shoalv1.ServiceSpec) {
			s.Task.Resources = &shoalv1.ResourceRequirements{Limits: &shoalv1.Resources{Pids: MaxPids + 1}}
		}, []string{"limits.pids: must be at most"}},
		// signals and grace
		{"stop signal PWR", func(s *shoalv1.ServiceSpec) { s.Task.Container.StopSignal = "PWR" }, nil},
		{"stop signal RTMIN+3", func(s *shoalv1.ServiceSpec) { s.Task.Container.StopSignal = "SIGRTMIN+3" }, nil},
		{"stop signal unknown", func(s *shoalv1.ServiceSpec) { s.Task.Container.StopSignal = "SIGNOPE" }, []string{"spec.task.container.stop_signal: unknown signal \"SIGNOPE\""}},
		{"stop signal 65", func(s *shoalv1.ServiceSpec) { s.Task.Container.StopSignal = "65" }, []string{"stop_signal: signal 65 out of range"}},
		{"stop grace too long", func(s *shoalv1.ServiceSpec) { s.Task.Container.StopGraceMs = 1 << 50 }, []string{"stop_grace_ms: must be at most 3600000"}},
		// published ports
		{"port without a network", func(s *shoalv1.ServiceSpec) {
			s.Task.Networks = nil
			s.Endpoint = &shoalv1.EndpointSpec{Ports: []*shoalv1.PortConfig{{TargetPort: 80, PublishedPort: 8080}}}
		}, []string{"spec.endpoint.ports: publishing a port needs the service on an overlay network"}},
		{"port ok", func(s *shoalv1.ServiceSpec) {
			s.Task.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: "front"}}
			s.Endpoint = &shoalv1.EndpointSpec{Ports: []*shoalv1.PortConfig{
				{TargetPort: 80, PublishedPort: 8080},
				{TargetPort: 53, PublishedPort: 8080, Protocol: "udp", PublishMode: "host"},
			}}
		}, nil},
		{"port unpublished", func(s *shoalv1.ServiceSpec) {
			s.Endpoint = &shoalv1.EndpointSpec{Ports: []*shoalv1.PortConfig{{TargetPort: 80}}}
		}, []string{"spec.endpoint.ports[0].published_port: must be 1-65535, got 0"}},
		{"port bad target", func(s *shoalv1.ServiceSpec) {
			s.Endpoint = &shoalv1.EndpointSpec{Ports: []*shoalv1.PortConfig{{TargetPort: 70000, PublishedPort: 80}}}
		}, []string{"spec.endpoint.ports[0].target_port: must be 1-65535, got 70000"}},
		{"port bad mode", func(s *shoalv1.ServiceSpec) {
			s.Endpoint = &shoalv1.EndpointSpec{Ports: []*shoalv1.PortConfig{{TargetPort: 80, PublishedPort: 80, PublishMode: "mesh"}}}
		}, []string{`spec.endpoint.ports[0].publish_mode: must be ingress or host, got "mesh"`}},
		{"port bad protocol", func(s *shoalv1.ServiceSpec) {
			s.Endpoint = &shoalv1.EndpointSpec{Ports: []*shoalv1.PortConfig{{TargetPort: 80, PublishedPort: 80, Protocol: "sctp"}}}
		}, []string{`spec.endpoint.ports[0].protocol: must be tcp or udp, got "sctp"`}},
		{"port twice", func(s *shoalv1.ServiceSpec) {
			s.Endpoint = &shoalv1.EndpointSpec{Ports: []*shoalv1.PortConfig{
				{TargetPort: 80, PublishedPort: 8080},
				{TargetPort: 81, PublishedPort: 8080, Protocol: "tcp", PublishMode: "host"},
			}}
		}, []string{"spec.endpoint.ports[1].published_port: 8080/tcp is already published by ports[0]"}},
		{"port reserved for VXLAN", func(s *shoalv1.ServiceSpec) {
			s.Task.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: "front"}}
			s.Endpoint = &shoalv1.EndpointSpec{Ports: []*shoalv1.PortConfig{
				{TargetPort: 4789, PublishedPort: 4789},
				{TargetPort: 53, PublishedPort: 4789, Protocol: "udp"},
			}}
		}, []string{"spec.endpoint.ports[1].published_port: 4789/udp is reserved for the overlay (VXLAN)"}},
		{"port reserved for gossip", func(s *shoalv1.ServiceSpec) {
			s.Task.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: "front"}}
			s.Endpoint = &shoalv1.EndpointSpec{Ports: []*shoalv1.PortConfig{{TargetPort: 80, PublishedPort: 7946, PublishMode: "host"}}}
		}, []string{"spec.endpoint.ports[0].published_port: 7946/tcp is reserved for gossip"}},
		{"endpoint mode vip is fine", func(s *shoalv1.ServiceSpec) { s.Endpoint = &shoalv1.EndpointSpec{Mode: "vip"} }, nil},
		{"networks", func(s *shoalv1.ServiceSpec) {
			s.Task.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: "front", Aliases: []string{"web", "web.internal"}}}
		}, nil},
		{"network bad target", func(s *shoalv1.ServiceSpec) { s.Task.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: "-x"}} }, []string{"spec.task.networks[0].target"}},
		{"network twice", func(s *shoalv1.ServiceSpec) {
			s.Task.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: "front"}, {Target: "front"}}
		}, []string{"spec.task.networks[1].target: \"front\" is already networks[0]"}},
		{"network bad alias", func(s *shoalv1.ServiceSpec) {
			s.Task.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: "front", Aliases: []string{"ok", "no_underscore"}}}
		}, []string{"spec.task.networks[0].aliases[1]", "not a DNS name"}},
		{"network alias in the tasks. namespace", func(s *shoalv1.ServiceSpec) {
			s.Task.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: "front", Aliases: []string{"ok", "Tasks.db"}}}
		}, []string{"spec.task.networks[0].aliases[1]", "reserved"}},
		{"endpoint mode dnsrr", func(s *shoalv1.ServiceSpec) { s.Endpoint = &shoalv1.EndpointSpec{Mode: "dnsrr"} }, nil},
		{"spread", func(s *shoalv1.ServiceSpec) {
			s.Task.Placement = &shoalv1.Placement{Spread: []string{"node.labels.zone"}}
		}, nil},
		// capabilities, names
		{"capability", func(s *shoalv1.ServiceSpec) { s.Task.Container.CapAdd = []string{"NET_ADMIN", "CAP_FLY"} }, []string{`cap_add[1]: unknown capability "CAP_FLY"`}},
		{"name", func(s *shoalv1.ServiceSpec) { s.Name = long(64) }, []string{"spec.name", "not a valid name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validService()
			tt.mutate(s)
			err := Service(s).Err()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want error containing %q, got nil", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestBindSourceDataDir: only the agent knows its data dir; a source in it
// or above it is refused there, and the managers let it pass.
func TestBindSourceDataDir(t *testing.T) {
	spec := func(src string) *shoalv1.TaskSpec {
		return &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo",
			Mounts: []*shoalv1.Mount{{Type: "bind", Source: src, Target: "/data"}}}}
	}
	node := Node{DataDir: "/var/lib/shoal"}
	for src, want := range map[string]string{
		"/var/lib/shoal":         "inside the node's data dir",
		"/var/lib/shoal/certs":   "inside the node's data dir",
		"/var/lib":               "contains the node's data dir",
		"/":                      "contains the node's data dir",
		"/var/lib/shoal-other":   "",
		"/srv/data":              "",
		"/var/lib/shoal/../root": "'..'",
	} {
		err := Task("spec", spec(src), node).Err()
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v", src, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "spec.container.mounts[0].source") || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", src, err, want)
		}
		if want != "'..'" && Task("spec", spec(src), Node{}).Err() != nil {
			t.Errorf("%s refused without a data dir", src)
		}
	}
}

func TestParseSignal(t *testing.T) {
	for s, want := range map[string]int{
		"TERM": 15, "SIGTERM": 15, "sigterm": 15, "15": 15, "QUIT": 3, "PWR": 30, "STOP": 19, "KILL": 9,
		"WINCH": 28, "SIGRTMIN": 34, "RTMIN+3": 37, "SIGRTMAX": 64, "RTMAX-2": 62, "64": 64, "1": 1,
	} {
		if got, err := ParseSignal(s); err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0", "65", "-1", "NOPE", "RTMIN-1", "RTMAX+1", "RTMIN+31", "RTMIN3", "SIG"} {
		if n, err := ParseSignal(s); err == nil {
			t.Errorf("ParseSignal(%q) = %d, want an error", s, n)
		}
	}
}

func TestTaskID(t *testing.T) {
	for _, id := range []string{"a", "0abc", "x_y.z-1", strings.Repeat("a", MaxTaskID)} {
		if err := TaskID(id); err != nil {
			t.Errorf("TaskID(%q): %v", id, err)
		}
	}
	for _, id := range []string{"", ".", "..", "../x", "a/b", "-a", "_a", "a b", strings.Repeat("a", MaxTaskID+1), "a\x00"} {
		if err := TaskID(id); err == nil {
			t.Errorf("TaskID(%q) accepted", id)
		}
	}
}

func TestCPUAndGrace(t *testing.T) {
	if q := CPUQuotaMicros(MinNanoCPUs); q != 1000 {
		t.Errorf("quota of the smallest limit = %d µs, want the kernel's 1000", q)
	}
	if q := CPUQuotaMicros(MaxNanoCPUs); q <= 0 || q != 4096*CPUPeriodMicros {
		t.Errorf("quota of the largest limit = %d", q)
	}
	if s := CPUShares(1); s != 2 {
		t.Errorf("shares of a tiny reservation = %d, want 2", s)
	}
	if s := CPUShares(1e9); s != 1024 {
		t.Errorf("shares of 1 CPU = %d", s)
	}
	if g := StopGrace(0); g != DefaultStopGrace {
		t.Errorf("StopGrace(0) = %v", g)
	}
}

func TestNodeSpec(t *testing.T) {
	if p := NodeSpec(&shoalv1.NodeSpec{DesiredRole: shoalv1.NodeRole_NODE_ROLE_WORKER}); len(p) != 0 {
		t.Fatal(p)
	}
	err := NodeSpec(&shoalv1.NodeSpec{Name: "a b", Availability: 7, DesiredRole: 9}).Err()
	for _, w := range []string{"spec.name", "spec.desired_role", "spec.availability"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("%v does not name %s", err, w)
		}
	}
}

// TestLongInputNotEchoed: a refusal names a huge key or value by its start
// and length, not whole.
func TestLongInputNotEchoed(t *testing.T) {
	huge := strings.Repeat("k", 70_000)
	spec := &shoalv1.ServiceSpec{Name: "web", Labels: map[string]string{huge: "v"},
		Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:1", Env: []string{huge}}}}
	err := Service(spec)
	if err == nil {
		t.Fatal("a 70 KB label key and env entry were accepted")
	}
	if msg := err.Error(); len(msg) > 2000 || !strings.Contains(msg, "(70000 bytes)") {
		t.Fatalf("message of %d bytes: %.300s", len(msg), msg)
	}
}
