package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Hint is an endpoint change a node gossips about one of its own tasks
// (see the package doc, "Hints"): the task's attachment to one network,
// where it lives (VTEP) and its new state. A hint is advice: the next
// network state from the managers overwrites whatever it did.
type Hint struct {
	NetworkID string
	TaskID    string
	Address   netip.Prefix // the attachment's address (CIDR)
	MAC       net.HardwareAddr
	VTEP      netip.Addr // underlay address of the task's node
	State     shoalv1.TaskState
}

// Up says the hint announces a live endpoint (RUNNING); any other
// state withdraws it.
func (h Hint) Up() bool { return h.State == shoalv1.TaskState_TASK_STATE_RUNNING }

const (
	hintMagic   = 0x53 // 'S'
	hintVersion = 1
	maxHintID   = 128
	// hintFixed: magic, version, state(2), vtep(4), addr(4), bits(1), mac(6), two id lengths.
	hintFixed = 2 + 2 + 4 + 4 + 1 + 6 + 2
	// MaxHintBytes is the largest encoded hint (well under the gossip
	// layer's 512-byte limit).
	MaxHintBytes = hintFixed + 2*maxHintID
)

// Encode returns the hint's wire form (IPv4 only, bounded ids).
func (h Hint) Encode() ([]byte, error) {
	if h.NetworkID == "" || len(h.NetworkID) > maxHintID || h.TaskID == "" || len(h.TaskID) > maxHintID {
		return nil, fmt.Errorf("hint: ids must be 1..%d bytes", maxHintID)
	}
	if !h.Address.IsValid() || !h.Address.Addr().Is4() || !h.VTEP.Is4() {
		return nil, errors.New("hint: address and VTEP must be IPv4")
	}
	if len(h.MAC) != 6 {
		return nil, fmt.Errorf("hint: MAC %q is not 6 bytes", h.MAC)
	}
	if h.State < 0 || h.State > 0xffff {
		return nil, fmt.Errorf("hint: state %d out of range", h.State)
	}
	b := make([]byte, 0, hintFixed+len(h.NetworkID)+len(h.TaskID))
	b = append(b, hintMagic, hintVersion)
	b = binary.BigEndian.AppendUint16(b, uint16(h.State))
	v, a := h.VTEP.As4(), h.Address.Addr().As4()
	b = append(b, v[:]...)
	b = append(b, a[:]...)
	b = append(b, byte(h.Address.Bits()))
	b = append(b, h.MAC...)
	b = append(b, byte(len(h.NetworkID)))
	b = append(b, h.NetworkID...)
	b = append(b, byte(len(h.TaskID)))
	b = append(b, h.TaskID...)
	return b, nil
}

// DecodeHint parses what Encode produced; anything else is an error.
func DecodeHint(b []byte) (Hint, error) {
	var h Hint
	if len(b) < hintFixed || len(b) > MaxHintBytes || b[0] != hintMagic || b[1] != hintVersion {
		return h, errors.New("hint: not a version-1 endpoint hint")
	}
	h.State = shoalv1.TaskState(binary.BigEndian.Uint16(b[2:4]))
	h.VTEP = netip.AddrFrom4([4]byte(b[4:8]))
	addr := netip.AddrFrom4([4]byte(b[8:12]))
	bits := int(b[12])
	if bits > 32 {
		return h, fmt.Errorf("hint: prefix length %d", bits)
	}
	h.Address = netip.PrefixFrom(addr, bits)
	h.MAC = net.HardwareAddr(append([]byte(nil), b[13:19]...))
	rest := b[19:]
	for _, dst := range []*string{&h.NetworkID, &h.TaskID} {
		if len(rest) < 1 || int(rest[0]) == 0 || len(rest) < 1+int(rest[0]) {
			return Hint{}, errors.New("hint: truncated")
		}
		*dst = string(rest[1 : 1+int(rest[0])])
		rest = rest[1+int(rest[0]):]
	}
	if len(rest) != 0 {
		return Hint{}, errors.New("hint: trailing bytes")
	}
	return h, nil
}

// HintState is the state a node gossips for its task's status, and
// whether to gossip at all. Hints carry no health, and a hint marking an
// endpoint RUNNING would make peers answer it by name before the
// managers' state says whether it is healthy: so a RUNNING task whose
// check has not passed yet (STARTING) is not hinted (the managers' state
// brings it, with its health), and an UNHEALTHY one, which the agent is
// stopping, is hinted SHUTDOWN so that peers stop sending it clients at
// once.
func HintState(st *shoalv1.TaskStatus) (shoalv1.TaskState, bool) {
	if st.GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
		return st.GetState(), true
	}
	switch st.GetHealth() {
	case shoalv1.TaskHealth_TASK_HEALTH_STARTING:
		return 0, false
	case shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY:
		return shoalv1.TaskState_TASK_STATE_SHUTDOWN, true
	}
	return st.GetState(), true
}

// HintsFor returns the hints that announce task t's change to state on
// this node (vtep): one per network attachment with an IPv4 address and
// a MAC. Attachments that cannot be encoded are skipped.
func HintsFor(t *shoalv1.Task, state shoalv1.TaskState, vtep netip.Addr) []Hint {
	var out []Hint
	for _, a := range t.GetNetworks() {
		p, err := parseAddr(a.GetAddress())
		if err != nil || !p.Addr().Is4() {
			continue
		}
		mac, err := net.ParseMAC(a.GetMac())
		if err != nil || len(mac) != 6 {
			continue
		}
		out = append(out, Hint{NetworkID: a.GetNetworkId(), TaskID: t.GetMeta().GetId(), Address: p, MAC: mac, VTEP: vtep, State: state})
	}
	return out
}

// hintAction is what the merge rule decides for one hint.
type hintAction int

const (
	hintIgnore   hintAction = iota // not our network, or the state already says it
	hintProgram                    // add FDB/neighbour entries for an endpoint the state lacks
	hintWithdraw                   // delete entries an earlier hint programmed
	hintMark                       // only the endpoint's observed state changes (names, VIPs)
)

// mergeHint is the merge rule (pure, so it is unit-tested): given the
// held state of the hint's network (nil: this node does not take part,
// the hint is ignored) and the hint, what to do. The state decides:
//   - a hint about an address or MAC the state gives to another task, about
//     the network's gateway, or about a MAC/VTEP that disagrees with the state's record of the same task, is
//     ignored (a freed address reused elsewhere never goes back);
//   - an endpoint the state has keeps its entries whatever the hint says;
//     the hint only changes the observed state used for names and VIPs;
//   - an endpoint the state lacks is programmed (up) or withdrawn (down).
func mergeHint(st *shoalv1.NetworkState, h Hint) hintAction {
	if st == nil {
		return hintIgnore
	}
	if d := st.GetNetwork().GetSpec().GetDriver(); d != "" && d != "overlay" {
		return hintIgnore
	}
	if p, err := netSubnet(st.GetNetwork()); err == nil && !p.Contains(h.Address.Addr()) {
		return hintIgnore
	}
	if g, err := netip.ParseAddr(st.GetNetwork().GetGateway()); err == nil && g == h.Address.Addr() {
		return hintIgnore // the gateway is never a remote endpoint
	}
	for _, ep := range st.GetEndpoints() {
		p, err := parseAddr(ep.GetAddress())
		sameAddr := err == nil && p.Addr() == h.Address.Addr()
		if ep.GetTaskId() != h.TaskID {
			if sameAddr {
				return hintIgnore // the state gives this address to another task
			}
			if m, err := net.ParseMAC(ep.GetMac()); err == nil && m.String() == h.MAC.String() {
				// the state gives this MAC to another task: appending an
				// FDB entry for it would copy that task's traffic to the
				// hinted VTEP
				return hintIgnore
			}
			continue
		}
		mac, err := net.ParseMAC(ep.GetMac())
		if !sameAddr || err != nil || mac.String() != h.MAC.String() || ep.GetNodeAddr() != h.VTEP.String() {
			return hintIgnore
		}
		if h.State <= ep.GetState() {
			return hintIgnore // states only move forward: the state is newer
		}
		return hintMark
	}
	if h.Up() {
		return hintProgram
	}
	return hintWithdraw
}

// hintKey identifies a hinted endpoint.
type hintKey struct{ network, task string }

// hintClash reports whether a held hint already programs h's address or
// MAC differently (another task, VTEP, address or MAC): programming h too
// would append a second FDB destination for the MAC, copying the traffic
// to both VTEPs, or move the address. The first hint holds until the
// state decides.
func hintClash(held map[hintKey]Hint, h Hint) bool {
	for k, o := range held {
		if k.network != h.NetworkID || !o.Up() {
			continue
		}
		sameAddr, sameMAC := o.Address.Addr() == h.Address.Addr(), o.MAC.String() == h.MAC.String()
		if !sameAddr && !sameMAC {
			continue
		}
		if o.TaskID != h.TaskID || o.VTEP != h.VTEP || !sameAddr || !sameMAC {
			return true
		}
	}
	return false
}

// MaxHeldHints bounds the hints a Node holds between two reconciles;
// beyond it new hints are dropped (the state will bring them anyway).
const MaxHeldHints = 4096

// markHints returns states with the observed state of the endpoints
// named by marks replaced (cloned; states itself is not modified).
func markHints(states []*shoalv1.NetworkState, marks map[hintKey]Hint) []*shoalv1.NetworkState {
	if len(marks) == 0 {
		return states
	}
	out := make([]*shoalv1.NetworkState, len(states))
	for i, st := range states {
		out[i] = st
		id := st.GetNetwork().GetMeta().GetId()
		var c *shoalv1.NetworkState
		for j, ep := range st.GetEndpoints() {
			h, ok := marks[hintKey{id, ep.GetTaskId()}]
			if !ok {
				continue
			}
			if c == nil {
				c = proto.Clone(st).(*shoalv1.NetworkState)
				out[i] = c
			}
			c.Endpoints[j].State = h.State
		}
	}
	return out
}
