package dns

import (
	"net"
	"reflect"
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func netState(id string, vips []*shoalv1.ServiceVIPState, eps ...*shoalv1.Endpoint) *shoalv1.NetworkState {
	return &shoalv1.NetworkState{
		Network:   &shoalv1.Network{Meta: &shoalv1.Meta{Id: id}},
		Endpoints: eps,
		Vips:      vips,
	}
}

func ep(svc, addr string, aliases ...string) *shoalv1.Endpoint {
	return &shoalv1.Endpoint{ServiceName: svc, Address: addr, Aliases: aliases, State: shoalv1.TaskState_TASK_STATE_RUNNING}
}

// starting is an endpoint whose task is not RUNNING yet.
func starting(svc, addr string, aliases ...string) *shoalv1.Endpoint {
	e := ep(svc, addr, aliases...)
	e.State = shoalv1.TaskState_TASK_STATE_STARTING
	return e
}

func strs(ips []net.IP) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

func testStates() []*shoalv1.NetworkState {
	return []*shoalv1.NetworkState{
		netState("n1", []*shoalv1.ServiceVIPState{
			{ServiceName: "web", Address: "10.1.0.2/24", EndpointMode: "vip", Aliases: []string{"www"}},
			{ServiceName: "db", EndpointMode: "dnsrr"},
			{ServiceName: "idle", Address: "10.1.0.9/24", EndpointMode: "dnsrr"},
		},
			ep("web", "10.1.0.10/24"), ep("web", "10.1.0.11/24", "front"),
			ep("db", "10.1.0.20/24"), ep("db", "10.1.0.21/24"),
			ep("bare", "10.1.0.30/24"),
			starting("db", "10.1.0.22/24", "late"), starting("soon", "10.1.0.40/24"),
		),
		netState("n2", []*shoalv1.ServiceVIPState{
			{ServiceName: "secret", Address: "10.2.0.2/24", EndpointMode: "vip"},
		}, ep("secret", "10.2.0.10/24")),
	}
}

func TestViewLookup(t *testing.T) {
	v := NewView()
	v.Update(testStates())
	for _, c := range []struct {
		nets   []string
		name   string
		want   []string
		exists bool
	}{
		{[]string{"n1"}, "web", []string{"10.1.0.2"}, true},
		{[]string{"n1"}, "WEB.", []string{"10.1.0.2"}, true},
		{[]string{"n1"}, "www", []string{"10.1.0.2"}, true},
		{[]string{"n1"}, "tasks.web", []string{"10.1.0.10", "10.1.0.11"}, true},
		{[]string{"n1"}, "tasks.www", []string{"10.1.0.10", "10.1.0.11"}, true},
		{[]string{"n1"}, "front", []string{"10.1.0.11"}, true},
		{[]string{"n1"}, "db", []string{"10.1.0.20", "10.1.0.21"}, true},
		{[]string{"n1"}, "tasks.db", []string{"10.1.0.20", "10.1.0.21"}, true},
		{[]string{"n1"}, "bare", []string{"10.1.0.30"}, true},
		{[]string{"n1"}, "idle", nil, true}, // dnsrr, no task: exists, nothing
		{[]string{"n1"}, "soon", nil, true}, // only a task not RUNNING yet: known, nothing
		{[]string{"n1"}, "late", nil, false},
		{[]string{"n1"}, "secret", nil, false},
		{[]string{"n2"}, "secret", []string{"10.2.0.2"}, true},
		{[]string{"n2"}, "web", nil, false},
		{[]string{"n1", "n2"}, "secret", []string{"10.2.0.2"}, true},
		{nil, "web", nil, false},
	} {
		got, ok := v.Lookup(c.nets, c.name)
		if ok != c.exists || !reflect.DeepEqual(strs(got), c.want) {
			t.Errorf("Lookup(%v, %q) = %v, %v; want %v, %v", c.nets, c.name, strs(got), ok, c.want, c.exists)
		}
	}
	v.Update(nil)
	if _, ok := v.Lookup([]string{"n1"}, "web"); ok {
		t.Error("web still known after an empty update")
	}
}

func TestResolvConf(t *testing.T) {
	dir := t.TempDir()
	host := dir + "/host"
	if err := writeFile(host, "nameserver 192.0.2.1\nsearch example.org corp.example\noptions edns0\n"); err != nil {
		t.Fatal(err)
	}
	out := dir + "/task/resolv.conf"
	if err := WriteResolvConf(out, host); err != nil {
		t.Fatal(err)
	}
	got, err := readFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := "# written by shoal: the embedded DNS server of the task's namespace\n" +
		"nameserver 127.0.0.11\nsearch example.org corp.example\noptions ndots:0\n"
	if got != want {
		t.Errorf("resolv.conf:\n%s\nwant:\n%s", got, want)
	}
	if b, err := ResolvConf(dir + "/missing"); err != nil || len(b) == 0 {
		t.Errorf("missing host file: %q, %v", b, err)
	}
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"web", "Web-1", "db.internal", "a", strings.Repeat("a", 63)} {
		if err := ValidName(ok); err != nil {
			t.Errorf("ValidName(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-web", "web-", "we_b", "tasks.web", "a..b", ".a", strings.Repeat("a", 64), "wéb", "a b"} {
		if err := ValidName(bad); err == nil {
			t.Errorf("ValidName(%q): no error", bad)
		}
	}
}

// TestViewVIPAliasAnswersVIPOnly: the dispatcher gives a service's network
// aliases both to its VIP state and to each of its endpoints. In vip mode
// the alias must answer the VIP alone, as the service name does; it used
// to answer the VIP and every task address (clients picking a task
// address bypassed the VIP and kept a dead task's address).
func TestViewVIPAliasAnswersVIPOnly(t *testing.T) {
	v := NewView()
	v.Update([]*shoalv1.NetworkState{netState("n1", []*shoalv1.ServiceVIPState{
		{ServiceName: "api", Address: "10.1.0.3/24", EndpointMode: "vip", Aliases: []string{"gateway"}},
		{ServiceName: "cache", EndpointMode: "dnsrr", Aliases: []string{"kv"}},
	},
		ep("api", "10.1.0.50/24", "gateway"), ep("api", "10.1.0.51/24", "gateway"),
		ep("cache", "10.1.0.60/24", "kv"),
	)})
	for name, want := range map[string][]string{
		"api": {"10.1.0.3"}, "gateway": {"10.1.0.3"},
		"tasks.gateway": {"10.1.0.50", "10.1.0.51"},
		"kv":            {"10.1.0.60"}, // dnsrr: the tasks
	} {
		got, ok := v.Lookup([]string{"n1"}, name)
		if !ok || !reflect.DeepEqual(strs(got), want) {
			t.Errorf("Lookup(%q) = %v, %v; want %v", name, strs(got), ok, want)
		}
	}
}
