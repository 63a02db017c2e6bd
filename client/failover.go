package client

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"

	"github.com/shoal-dev/shoal/errdefs"
)

// A manager that answers "not ready" (errdefs.ErrNotReady: restarted
// without quorum, still joining, not caught up) is failed over from as a
// refused connection is: the call's next attempt goes to the next address.
// pick_first stays on a connected address as long as the resolver lists it,
// so the address is left out of the resolver's list (hostList.skip) until
// another answers not ready in its turn (the addresses are taken in turn)
// or every address left refuses connections (then the full list is given
// back, so the one that was not ready is asked again). Only when every
// address refused or answered not ready during the call, for the ready
// wait, does the call fail, with the last answer's reason first.

// unreadyAnswer is a manager's last "not ready" answer.
type unreadyAnswer struct {
	at  time.Time
	why string // notReadyReason
}

// notReady records host's "not ready" answer (why) and moves the
// connection off host when there is another address to go to.
func (l *hostList) notReady(host, why string) {
	if host == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	host = hostIn(l.hosts, host)
	if l.unready == nil {
		l.unready = map[string]unreadyAnswer{}
	}
	l.unready[host] = unreadyAnswer{at: time.Now(), why: why}
	if l.skip != host && len(l.hosts) > 1 && slices.Contains(l.hosts, host) {
		l.skip = host
		l.updateLocked()
	}
}

// answered records that host gave an answer other than "not ready" (it
// may be ready now; "" and unknown addresses: nothing to record).
func (l *hostList) answered(host string) {
	if host == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.unready, hostIn(l.hosts, host))
}

// retrySkipped gives the skipped address back to the connection once every
// other address refuses connections: it may be ready by now, and nothing
// else can serve.
func (l *hostList) retrySkipped(dials *dialLog) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.skip == "" || !dials.allRefused(l.resolvedLocked()) {
		return
	}
	l.skip = ""
	l.updateLocked()
}

// resolvedLocked is the address list the connection is given: every
// address but the skipped one, starting with the one after it (so that
// addresses answering not ready are taken in turn).
func (l *hostList) resolvedLocked() []string {
	i := slices.Index(l.hosts, l.skip)
	if i < 0 || len(l.hosts) < 2 {
		return slices.Clone(l.hosts)
	}
	return append(slices.Clone(l.hosts[i+1:]), l.hosts[:i]...)
}

// updateLocked gives the connection its address list.
func (l *hostList) updateLocked() {
	if l.r != nil {
		l.r.UpdateState(resolver.State{Addresses: addresses(l.resolvedLocked())})
	}
}

// noneReady says why no manager can serve the call that began at since and
// ended with err (answered by p), or "" when one may: err is something
// else (an answer, an election in progress, a call a manager held), or an
// address neither refused its last connection nor answered not ready
// during the call. The reason of err's own answer comes first.
func (l *hostList) noneReady(err error, p *peer.Peer, dials *dialLog, since time.Time) string {
	if err == nil || !errdefs.IsUnavailable(err) {
		return ""
	}
	l.mu.Lock()
	hosts := slices.Clone(l.hosts)
	unready := make(map[string]unreadyAnswer, len(l.unready))
	for h, a := range l.unready {
		unready[h] = a
	}
	l.mu.Unlock()
	last := "" // the address that gave err, when it said not ready
	if errdefs.IsNotReady(err) {
		last = hostIn(hosts, dials.hostOf(p))
	}
	var refused, others []string
	for _, h := range hosts {
		a, answered := unready[h]
		switch {
		case answered && !a.at.Before(since) && h != last:
			others = append(others, a.why)
		case answered && !a.at.Before(since):
		case dials.refusedLast(h):
			refused = append(refused, h)
		default:
			return ""
		}
	}
	if last == "" && len(others) == 0 {
		return fmt.Sprintf("no manager listens at %s (connection refused): is the node running? A node that is starting opens its port within seconds; --ready-wait waits longer", strings.Join(refused, ", "))
	}
	parts := others
	if last != "" {
		parts = append([]string{notReadyReason(err, p)}, others...)
	}
	if len(refused) > 0 {
		parts = append(parts, fmt.Sprintf("nothing listens at %s (connection refused)", strings.Join(refused, ", ")))
	}
	return strings.Join(parts, "; ")
}

// hostIn is host as one of hosts: itself, or the only address there is
// (a name dialled by a dialer of the caller's own answers from its IP).
func hostIn(hosts []string, host string) string {
	if host != "" && !slices.Contains(hosts, host) && len(hosts) == 1 {
		return hosts[0]
	}
	return host
}
