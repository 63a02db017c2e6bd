package daemon

import (
	"strings"
	"testing"
)

// TestUnderlayRefusesWhatCannotCarryVXLAN: the advertise addresses on
// which the node runs bridge-only, each with a reason (loopback as in
// `shoal dev`, a name, IPv6, an address no interface holds).
func TestUnderlayRefusesWhatCannotCarryVXLAN(t *testing.T) {
	for _, tc := range []struct {
		addr, why string
	}{
		{"127.0.0.1:4242", "not a non-loopback IPv4"},
		{"127.0.0.21", "not a non-loopback IPv4"},
		{"node1.example:4242", "not a non-loopback IPv4"},
		{"[fd00::1]:4242", "not a non-loopback IPv4"},
		{"192.0.2.77:4242", "no interface holds 192.0.2.77"}, // TEST-NET-1, on no interface here
	} {
		vtep, uplink, why := underlay(tc.addr)
		if why == nil || !strings.Contains(why.Error(), tc.why) {
			t.Errorf("%s: %v, want %q", tc.addr, why, tc.why)
		}
		if vtep.IsValid() || uplink != "" {
			t.Errorf("%s: VTEP %v uplink %q with an error", tc.addr, vtep, uplink)
		}
	}
}
