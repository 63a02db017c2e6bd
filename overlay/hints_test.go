package overlay

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

const (
	running  = shoalv1.TaskState_TASK_STATE_RUNNING
	assigned = shoalv1.TaskState_TASK_STATE_ASSIGNED
	complete = shoalv1.TaskState_TASK_STATE_COMPLETE
)

func mkHint(task, addr, vtep string, st shoalv1.TaskState) Hint {
	a := netip.MustParseAddr(addr).As4()
	return Hint{NetworkID: "net1", TaskID: task, Address: netip.MustParsePrefix(addr + "/24"),
		MAC: net.HardwareAddr{0x02, 0x42, a[0], a[1], a[2], a[3]}, VTEP: netip.MustParseAddr(vtep), State: st}
}

func TestHintEncodeDecode(t *testing.T) {
	h := mkHint("task-abcdef", "10.91.0.7", "192.168.250.2", running)
	b, err := h.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > MaxHintBytes || len(b) > 512 {
		t.Fatalf("hint of %d bytes", len(b))
	}
	g, err := DecodeHint(b)
	if err != nil {
		t.Fatal(err)
	}
	if g.NetworkID != h.NetworkID || g.TaskID != h.TaskID || g.Address != h.Address || !bytes.Equal(g.MAC, h.MAC) || g.VTEP != h.VTEP || g.State != h.State || !g.Up() {
		t.Fatalf("round trip: %+v != %+v", g, h)
	}
	// Every truncation and a trailing byte are refused; so are garbage and
	// another version.
	for i := 0; i < len(b); i++ {
		if _, err := DecodeHint(b[:i]); err == nil {
			t.Fatalf("truncated to %d accepted", i)
		}
	}
	if _, err := DecodeHint(append(append([]byte(nil), b...), 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
	v2 := append([]byte(nil), b...)
	v2[1] = 2
	if _, err := DecodeHint(v2); err == nil {
		t.Fatal("version 2 accepted")
	}
	bad := append([]byte(nil), b...)
	bad[12] = 33
	if _, err := DecodeHint(bad); err == nil {
		t.Fatal("prefix length 33 accepted")
	}
	// Invalid hints are not encoded.
	for _, x := range []Hint{
		{},
		func() Hint { x := h; x.TaskID = strings.Repeat("t", 129); return x }(),
		func() Hint { x := h; x.MAC = x.MAC[:4]; return x }(),
		func() Hint { x := h; x.VTEP = netip.MustParseAddr("fd00::1"); return x }(),
		func() Hint { x := h; x.Address = netip.MustParsePrefix("fd00::1/64"); return x }(),
	} {
		if _, err := x.Encode(); err == nil {
			t.Fatalf("encoded %+v", x)
		}
	}
	// The largest hint fits.
	big := h
	big.NetworkID, big.TaskID = strings.Repeat("n", 128), strings.Repeat("t", 128)
	if b, err := big.Encode(); err != nil || len(b) != MaxHintBytes {
		t.Fatalf("largest hint: %d bytes, %v", len(b), err)
	}
}

func TestHintsFor(t *testing.T) {
	task := &shoalv1.Task{Meta: &shoalv1.Meta{Id: "t1"}, Networks: []*shoalv1.NetworkAttachment{
		{NetworkId: "net1", Address: "10.91.0.7/24", Mac: "02:42:0a:5b:00:07"},
		{NetworkId: "net2", Address: "bogus", Mac: "02:42:0a:5b:00:07"},
		{NetworkId: "net3", Address: "10.92.0.7/24", Mac: "02:42:0a:5c:00:07"},
	}}
	hs := HintsFor(task, running, netip.MustParseAddr("192.168.250.1"))
	if len(hs) != 2 || hs[0].NetworkID != "net1" || hs[1].NetworkID != "net3" || hs[1].Address.String() != "10.92.0.7/24" {
		t.Fatalf("%+v", hs)
	}
}

func hintState(eps ...*shoalv1.Endpoint) *shoalv1.NetworkState {
	return &shoalv1.NetworkState{Network: &shoalv1.Network{Meta: &shoalv1.Meta{Id: "net1"}, Vni: 4500, Subnet: "10.91.0.0/24",
		Spec: &shoalv1.NetworkSpec{Driver: "overlay"}}, Endpoints: eps}
}

func stEP(task, addr, vtep string, st shoalv1.TaskState) *shoalv1.Endpoint {
	h := mkHint(task, addr, vtep, st)
	return &shoalv1.Endpoint{TaskId: task, Address: h.Address.String(), Mac: h.MAC.String(), NodeAddr: vtep, State: st}
}

// The merge rule: the state decides.
func TestMergeHint(t *testing.T) {
	const v2, v3 = "192.168.250.2", "192.168.250.3"
	st := hintState(stEP("a", "10.91.0.2", v2, assigned), stEP("b", "10.91.0.3", v3, running))
	for _, c := range []struct {
		name string
		st   *shoalv1.NetworkState
		h    Hint
		want hintAction
	}{
		{"network not held here", nil, mkHint("x", "10.91.0.9", v2, running), hintIgnore},
		{"bridge driver", func() *shoalv1.NetworkState {
			s := hintState()
			s.Network.Spec.Driver = "bridge"
			return s
		}(), mkHint("x", "10.91.0.9", v2, running), hintIgnore},
		{"address outside the subnet", st, mkHint("x", "10.99.0.9", v2, running), hintIgnore},
		{"new endpoint up", st, mkHint("x", "10.91.0.9", v2, running), hintProgram},
		{"unknown endpoint down", st, mkHint("x", "10.91.0.9", v2, complete), hintWithdraw},
		{"address the state gives another task", st, mkHint("x", "10.91.0.3", v2, running), hintIgnore},
		{"down hint for another task's address", st, mkHint("x", "10.91.0.3", v3, complete), hintIgnore},
		{"known endpoint becomes running", st, mkHint("a", "10.91.0.2", v2, running), hintMark},
		{"known endpoint ends: entries stay, state marked", st, mkHint("b", "10.91.0.3", v3, complete), hintMark},
		{"state already says it", st, mkHint("b", "10.91.0.3", v3, running), hintIgnore},
		{"stale hint (state is newer)", hintState(stEP("a", "10.91.0.2", v2, complete)), mkHint("a", "10.91.0.2", v2, running), hintIgnore},
		{"same task, other VTEP than the state", st, mkHint("a", "10.91.0.2", v3, running), hintIgnore},
		{"same task, other address than the state", st, mkHint("a", "10.91.0.8", v2, running), hintIgnore},
		{"new address with the MAC the state gives another task", st, func() Hint {
			h := mkHint("x", "10.91.0.9", "192.168.250.66", running)
			h.MAC = mkHint("b", "10.91.0.3", v3, running).MAC
			return h
		}(), hintIgnore},
		{"the network's gateway", func() *shoalv1.NetworkState {
			s := hintState()
			s.Network.Gateway = "10.91.0.1"
			return s
		}(), mkHint("x", "10.91.0.1", "192.168.250.66", running), hintIgnore},
	} {
		if got := mergeHint(c.st, c.h); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestMarkHints(t *testing.T) {
	st := hintState(stEP("a", "10.91.0.2", "192.168.250.2", assigned), stEP("b", "10.91.0.3", "192.168.250.3", running))
	out := markHints([]*shoalv1.NetworkState{st}, map[hintKey]Hint{{"net1", "a"}: mkHint("a", "10.91.0.2", "192.168.250.2", running)})
	if out[0].Endpoints[0].State != running || out[0].Endpoints[1].State != running {
		t.Fatalf("%v", out[0].Endpoints)
	}
	if st.Endpoints[0].State != assigned {
		t.Fatal("held state modified")
	}
	if same := markHints([]*shoalv1.NetworkState{st}, nil); same[0] != st {
		t.Fatal("no marks: states not returned as they are")
	}
}
