package trust

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/errdefs"
)

// recheckStream is one certificate stream in progress that the authorizer
// asks about again every Recheck.
type recheckStream struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	id     Identity // as admitted (the role it acts as), for messages
	certID Identity // as the certificate says, what is checked
	roles  []Role   // the method's roles
	method string
	// asking: a check of this stream through Ongoing or Current (which
	// may ask another process) has not answered yet; the next period
	// starts none while it runs.
	asking atomic.Bool
}

// rechecker asks about every open certificate stream once a period from
// one goroutine, which runs while streams are open (and ends with the
// last), so a manager holding thousands of sessions has one ticker and,
// with OngoingView, one store read per period rather than one of each
// per stream.
type rechecker struct {
	mu      sync.Mutex // guards streams and running
	streams map[*recheckStream]struct{}
	running bool // the loop goroutine is started and has not decided to end
}

// add puts s under recheck by a's policy and returns what takes it off.
func (r *rechecker) add(a *Authorizer, s *recheckStream) (remove func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.streams == nil {
		r.streams = map[*recheckStream]struct{}{}
	}
	r.streams[s] = struct{}{}
	if !r.running {
		r.running = true
		go r.loop(a)
	}
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.streams, s)
	}
}

// loop rechecks every open stream each period, and ends when none is open.
func (r *rechecker) loop(a *Authorizer) {
	t := time.NewTicker(a.Recheck)
	defer t.Stop()
	var open []*recheckStream
	for range t.C {
		r.mu.Lock()
		if len(r.streams) == 0 {
			r.running = false
			r.mu.Unlock()
			return
		}
		open = open[:0]
		for s := range r.streams {
			open = append(open, s)
		}
		r.mu.Unlock()
		a.recheckAll(open)
		clear(open) // no stream kept alive by the buffer until the next period
	}
}

// recheckAll asks about each of streams once, through one store read when
// OngoingView is set, and ends those whose caller is refused now. Without
// a view each stream is asked about in a goroutine of its own, bound to
// the stream: Ongoing may ask another process (a node asks a manager, up
// to 5 s per manager tried), and asked in turn from the loop, one caller's
// unanswered check held back every other stream's, a removed node's log
// follow included, for as long as it took.
func (a *Authorizer) recheckAll(streams []*recheckStream) {
	var view func(Identity) (Role, error)
	if a.OngoingView != nil {
		view = a.OngoingView()
	}
	for _, s := range streams {
		if s.ctx.Err() != nil {
			continue
		}
		if view != nil {
			if err := recheckVerdict(s, view); err != nil {
				s.cancel(err)
			}
			continue
		}
		if !s.asking.CompareAndSwap(false, true) {
			continue // the previous period's check is still out
		}
		check := func(id Identity) (Role, error) { return a.Current(s.ctx, id) }
		if a.Ongoing != nil {
			check = func(id Identity) (Role, error) { return a.Ongoing(s.ctx, id) }
		}
		go func() {
			defer s.asking.Store(false)
			if err := recheckVerdict(s, check); err != nil {
				s.cancel(err)
			}
		}()
	}
}

// recheckVerdict is the refusal that ends stream s under check, or nil:
// a certificate the store no longer honours, or a role the method does
// not allow. A store that cannot be asked (UNAVAILABLE) ends nothing.
func recheckVerdict(s *recheckStream, check func(Identity) (Role, error)) error {
	cur, err := currentBy(s.certID, check)
	switch {
	case errdefs.IsPermissionDenied(err):
		return err
	case err == nil && len(s.roles) > 0 && !slices.Contains(s.roles, cur.Role):
		return errdefs.PermissionDeniedf("%s may no longer call %s: it now acts as a %s", s.id, s.method, cur.Role)
	}
	return nil
}
