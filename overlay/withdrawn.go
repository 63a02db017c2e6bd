package overlay

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/specrules"
)

// Withdrawn is a node's acknowledgement, gossiped once the node's names,
// VIPs and published ports were built from states listing a stopping
// task's endpoints as no longer serving (WithdrawnTasks): from then on
// the node sends that task no new connection. The task's own node waits
// for the acknowledgements of every node with endpoints on the task's
// networks (EndpointNodes) before signalling it (the agent's endpoint
// drain), so a client's VIP never picks a backend that is already gone.
type Withdrawn struct {
	VTEP   netip.Addr // the acknowledging node's underlay address
	TaskID string
}

const (
	withdrawnMagic   = 0x57 // 'W'; a Hint starts with 'S'
	withdrawnVersion = 1
	withdrawnFixed   = 2 + 4 + 1
)

// IsWithdrawn says whether b is meant as a Withdrawn message (not a
// Hint); DecodeWithdrawn checks the rest.
func IsWithdrawn(b []byte) bool { return len(b) > 0 && b[0] == withdrawnMagic }

// Encode returns the message's wire form (IPv4, a bounded task id).
func (w Withdrawn) Encode() ([]byte, error) {
	if w.TaskID == "" || len(w.TaskID) > maxHintID {
		return nil, fmt.Errorf("withdrawn: task id must be 1..%d bytes", maxHintID)
	}
	if !w.VTEP.Is4() {
		return nil, errors.New("withdrawn: VTEP must be IPv4")
	}
	v := w.VTEP.As4()
	b := append([]byte{withdrawnMagic, withdrawnVersion}, v[:]...)
	b = append(b, byte(len(w.TaskID)))
	return append(b, w.TaskID...), nil
}

// DecodeWithdrawn parses what Encode produced; anything else is an error.
func DecodeWithdrawn(b []byte) (Withdrawn, error) {
	if len(b) < withdrawnFixed+1 || b[0] != withdrawnMagic || b[1] != withdrawnVersion {
		return Withdrawn{}, errors.New("withdrawn: not a version-1 withdrawal")
	}
	n := int(b[6])
	if n == 0 || len(b) != withdrawnFixed+n {
		return Withdrawn{}, errors.New("withdrawn: bad task id length")
	}
	return Withdrawn{VTEP: netip.AddrFrom4([4]byte(b[2:6])), TaskID: string(b[7:])}, nil
}

// WithdrawnTasks returns the ids of the tasks whose endpoints on the
// overlay networks of states are past RUNNING (a task the managers are
// stopping is delivered SHUTDOWN, one that ended is marked by its hint):
// names and VIPs built from states send them nothing. Sorted, unique.
func WithdrawnTasks(states []*shoalv1.NetworkState) []string {
	var out []string
	for _, st := range states {
		if d := st.GetNetwork().GetSpec().GetDriver(); d != "" && d != specrules.DriverOverlay {
			continue
		}
		for _, ep := range st.GetEndpoints() {
			if ep.GetState() > shoalv1.TaskState_TASK_STATE_RUNNING && ep.GetTaskId() != "" {
				out = append(out, ep.GetTaskId())
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// EndpointNodes returns the underlay addresses of the nodes with
// endpoints on the overlay networks networks (ids) in states: the nodes
// whose tasks' VIPs may send connections to an endpoint there. Sorted,
// unique; unparsable addresses are skipped.
func EndpointNodes(states []*shoalv1.NetworkState, networks []string) []netip.Addr {
	var out []netip.Addr
	for _, st := range states {
		if d := st.GetNetwork().GetSpec().GetDriver(); d != "" && d != specrules.DriverOverlay {
			continue
		}
		if !slices.Contains(networks, st.GetNetwork().GetMeta().GetId()) {
			continue
		}
		for _, ep := range st.GetEndpoints() {
			if a, err := netip.ParseAddr(ep.GetNodeAddr()); err == nil && a.Is4() {
				out = append(out, a)
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}
