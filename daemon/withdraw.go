package daemon

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// withdrawals holds the overlay.Withdrawn acknowledgements this node made
// and received, and lets a stopping task's drain wait for them: a task
// is signalled only once every node with endpoints on its networks has
// said that its names, VIPs and published ports send it nothing new
// (agent.EndpointWithdrawal). Measured from each node's own refresh, the
// drain no longer depends on how long a refresh takes anywhere.
type withdrawals struct {
	mu      sync.Mutex // guards the fields below
	acks    map[string]*taskAcks
	changed chan struct{} // closed and replaced on every new acknowledgement
	// sent: the tasks this node acknowledged that its newest refresh
	// still listed as withdrawn (each is acknowledged once).
	sent map[string]bool
	// waiting: the drains waiting for each task (its acknowledgements
	// are not expired meanwhile).
	waiting map[string]int
}

type taskAcks struct {
	from map[netip.Addr]bool
	at   time.Time // the newest acknowledgement's arrival
}

const (
	// withdrawnTTL is how long acknowledgements are kept for a task no
	// drain waits for (they may arrive before its own stop); they are
	// expired when another task's arrives and at every refresh.
	withdrawnTTL = time.Minute
	// maxWithdrawn bounds the tasks acknowledgements are kept for.
	maxWithdrawn = 4096
)

func newWithdrawals() *withdrawals {
	return &withdrawals{acks: map[string]*taskAcks{}, changed: make(chan struct{}), sent: map[string]bool{}, waiting: map[string]int{}}
}

// add records that node from acknowledged task's withdrawal.
func (w *withdrawals) add(task string, from netip.Addr, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	a := w.acks[task]
	if a == nil {
		w.expireLocked(now)
		if len(w.acks) >= maxWithdrawn {
			return // the drain's limit stands in for what is dropped
		}
		a = &taskAcks{from: map[netip.Addr]bool{}}
		w.acks[task] = a
	}
	a.from[from], a.at = true, now
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *withdrawals) expireLocked(now time.Time) {
	for id, a := range w.acks {
		if now.Sub(a.at) > withdrawnTTL && w.waiting[id] == 0 {
			delete(w.acks, id)
		}
	}
}

// acknowledge takes the tasks a finished refresh built names and VIPs
// without (overlay.WithdrawnTasks), records this node's (self) own
// acknowledgement of each, and returns those not acknowledged before:
// the ones to gossip.
func (w *withdrawals) acknowledge(tasks []string, self netip.Addr, now time.Time) []string {
	var fresh []string
	w.mu.Lock()
	sent := make(map[string]bool, len(tasks))
	for _, id := range tasks {
		sent[id] = true
		if !w.sent[id] {
			fresh = append(fresh, id)
		}
	}
	w.sent = sent
	w.expireLocked(now)
	w.mu.Unlock()
	for _, id := range fresh {
		w.add(id, self, now)
	}
	return fresh
}

// wait blocks until every node of need has acknowledged task's
// withdrawal (true) or ctx ends (false).
func (w *withdrawals) wait(ctx context.Context, task string, need []netip.Addr) bool {
	w.mu.Lock()
	w.waiting[task]++
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		if w.waiting[task]--; w.waiting[task] <= 0 {
			delete(w.waiting, task)
		}
		w.mu.Unlock()
	}()
	for {
		w.mu.Lock()
		a, ch := w.acks[task], w.changed
		missing := slices.ContainsFunc(need, func(n netip.Addr) bool { return a == nil || !a.from[n] })
		w.mu.Unlock()
		if !missing {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// missing returns the nodes of need that have not acknowledged task
// (for the drain's log line).
func (w *withdrawals) missing(task string, need []netip.Addr) []netip.Addr {
	w.mu.Lock()
	defer w.mu.Unlock()
	a := w.acks[task]
	var out []netip.Addr
	for _, n := range need {
		if a == nil || !a.from[n] {
			out = append(out, n)
		}
	}
	return out
}
