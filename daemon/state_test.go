package daemon

import (
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/datadir"
)

func TestWithPort(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"127.0.0.21", "127.0.0.21:4242", ""},
		{"127.0.0.21:5000", "127.0.0.21:5000", ""},
		{"::1", "[::1]:4242", ""},
		{"", "", "required"},
		{"example.com", "", "not an IP address"},
		{"127.0.0.1:99999", "", "bad port"},
	}
	for _, tt := range tests {
		got, err := withPort(tt.in, "--advertise-addr")
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("withPort(%q) err = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("withPort(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestApplyAgentOptions(t *testing.T) {
	for _, tt := range []struct{ given, want string }{
		{"", "10.0.0.5:4243"},              // advertise port + 1
		{"10.0.0.9", "10.0.0.9:4243"},      // host only: the agent port, not the manager's
		{"10.0.0.9:7000", "10.0.0.9:7000"}, // as given
		{"[fd00::1]", "[fd00::1]:4243"},    // IPv6 host only
	} {
		st := &datadir.Node{AdvertiseAddr: "10.0.0.5:4242"}
		if _, err := applyAgentOptions(st, Options{AgentAddr: tt.given}); err != nil {
			t.Fatalf("%q: %v", tt.given, err)
		}
		if st.AgentAddr != tt.want {
			t.Errorf("--agent-addr %q → %q, want %q", tt.given, st.AgentAddr, tt.want)
		}
	}
}

func TestApplyAgentOptionsSaysWhenChanged(t *testing.T) {
	st := &datadir.Node{AdvertiseAddr: "10.0.0.5:4242"}
	o := Options{Bridge: "br1", InsecureRegistries: []string{"r:5000"}}
	if changed, err := applyAgentOptions(st, o); err != nil || !changed {
		t.Fatalf("first apply: changed %v, err %v", changed, err)
	}
	if changed, err := applyAgentOptions(st, o); err != nil || changed {
		t.Errorf("same options again: changed %v, err %v (node.json would be rewritten for nothing)", changed, err)
	}
	if changed, _ := applyAgentOptions(st, Options{InsecureRegistries: []string{"other:5000"}}); !changed {
		t.Error("a new registry list was not seen as a change")
	}
}

// TestNodeNameKept: the name given to init/join is kept in node.json, so a
// `shoal daemon` without --node-name describes the node by it; a new
// --node-name replaces it.
func TestNodeNameKept(t *testing.T) {
	st := &datadir.Node{AdvertiseAddr: "10.0.0.5:4242"}
	if changed, err := applyAgentOptions(st, Options{NodeName: "vm1"}); err != nil || !changed || st.NodeName != "vm1" {
		t.Fatalf("init with --node-name: %q changed %v err %v", st.NodeName, changed, err)
	}
	if _, err := applyAgentOptions(st, Options{}); err != nil || st.NodeName != "vm1" {
		t.Fatalf("daemon without --node-name: %q, %v", st.NodeName, err)
	}
	if d := describe(st.NodeName); d.GetHostname() != "vm1" {
		t.Fatalf("described as %q", d.GetHostname())
	}
	if _, _ = applyAgentOptions(st, Options{NodeName: "vm2"}); st.NodeName != "vm2" {
		t.Fatalf("a new --node-name: %q", st.NodeName)
	}
}

// TestHTTPAddr: the HTTPS API's address defaults to the advertise host
// and port + 2; a host alone takes that port; off disables; junk is
// refused naming the flag.
func TestHTTPAddr(t *testing.T) {
	for _, tc := range []struct {
		in, adv, want, err string
	}{
		{"", "10.0.0.1:4242", "10.0.0.1:4244", ""},
		{"", "127.0.0.21:5000", "127.0.0.21:5002", ""},
		{"off", "10.0.0.1:4242", "", ""},
		{"0.0.0.0:8443", "10.0.0.1:4242", "0.0.0.0:8443", ""},
		{"10.0.0.9", "10.0.0.1:4242", "10.0.0.9:4244", ""},
		{":9443", "10.0.0.1:4242", ":9443", ""},
		{"host:1", "10.0.0.1:4242", "", "--http-addr"},
		{"10.0.0.9:99999", "10.0.0.1:4242", "", "--http-addr"},
	} {
		got, err := httpAddr(tc.in, tc.adv)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("httpAddr(%q): %q, %v; want an error naming %s", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("httpAddr(%q, %q) = %q, %v; want %q", tc.in, tc.adv, got, err, tc.want)
		}
	}
}
