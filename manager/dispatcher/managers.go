package dispatcher

import (
	"context"
	"slices"

	"github.com/hashicorp/raft"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// A session's welcome names the managers (Config.Managers), and an agent
// keeps that list for failing over and in its data dir's node.json (which
// the CLI reads to find managers). When the set of managers changes while
// sessions are open (a manager joins or is removed: a raft configuration
// change), the open sessions are sent the new list (SessionMessage.managers)
// with their next heartbeat acknowledgement; before, the first manager of a
// cluster listed only itself until its agent's session opened again.
//
// One goroutine (followManagers, while Run is) observes the leader's raft
// peers (hashicorp/raft's PeerObservation: the leader starts or stops
// replicating to a server whenever the configuration changes) and
// publishes the list with a generation; each session's receiver compares
// the generation it last sent (or its welcome's) with the published one,
// which costs an atomic load per heartbeat and no goroutine per session.
// A change of a manager's address alone (same server id) is not observed.

// managerList is a published manager list.
type managerList struct {
	gen  uint64 // bumped when the list changes and when Run begins; 0: none published yet
	list []string
}

// managersGen is the generation of the manager list published now; a
// session reads it before its welcome's list, so a change after that is
// sent to it again.
func (d *Dispatcher) managersGen() uint64 {
	if m := d.mgrs.Load(); m != nil {
		return m.gen
	}
	return 0
}

// tellManagers is the published manager list for a session that has not
// been told this generation (*sent), which it records; nil when none.
func (d *Dispatcher) tellManagers(sent *uint64) *shoalv1.SessionMessage {
	m := d.mgrs.Load()
	if m == nil || m.gen == *sent || len(m.list) == 0 {
		return nil
	}
	*sent = m.gen
	return &shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Managers{Managers: &shoalv1.ManagerList{Managers: m.list}}}
}

// publishManagers reads the manager list and publishes it when it differs
// from the published one, or always (first) when Run begins: a session
// may have opened since Run began and before this first list, reading the
// generation published before (0 for none, or a previous term's) with
// its welcome's list, which may predate a change. A new generation tells
// such a session the list again (once, and at worst the same list);
// generations never go back, so no session's generation can equal a
// newer list's.
func (d *Dispatcher) publishManagers(first bool) {
	list := d.cfg.Managers()
	old := d.mgrs.Load()
	if old == nil {
		d.mgrs.Store(&managerList{gen: 1, list: list})
		return
	}
	if !first && (len(list) == 0 || slices.Equal(list, old.list)) {
		return
	}
	d.mgrs.Store(&managerList{gen: old.gen + 1, list: list})
	if !first {
		d.log.Info("manager list changed; telling open sessions", "managers", list)
	}
}

// followManagers publishes the manager list when Run starts and again on
// every change of the raft peers, until ctx ends.
func (d *Dispatcher) followManagers(ctx context.Context) error {
	if d.cfg.Managers == nil {
		return nil
	}
	var changed chan raft.Observation
	if d.cfg.Store != nil && d.cfg.Store.Raft() != nil {
		// One pending observation is enough: the list is read afresh
		// after it, and raft does not block on a full channel.
		changed = make(chan raft.Observation, 1)
		obs := raft.NewObserver(changed, false, func(o *raft.Observation) bool {
			_, ok := o.Data.(raft.PeerObservation)
			return ok
		})
		r := d.cfg.Store.Raft()
		r.RegisterObserver(obs)
		defer r.DeregisterObserver(obs)
	}
	d.publishManagers(true)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			d.publishManagers(false)
		}
	}
}
