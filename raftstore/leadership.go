package raftstore

import (
	"sync"

	"github.com/hashicorp/raft"
)

// leadership tracks whether this server is a leader ready to serve, and
// wakes whoever waits for a change of leader.
//
// Being raft leader is not enough to serve: a new leader may hold entries
// that earlier leaders committed but that its FSM has not applied yet, and
// leader-only code acting on that older view could, say, create a task that
// already exists. So a new leader first commits a barrier; only once that is
// applied does IsLeader report true (and Leader name this server).
type leadership struct {
	mu sync.Mutex // guards readyTerm and changed
	// readyTerm is the raft term in which this server's leader barrier was
	// applied; 0 when none.
	readyTerm uint64
	// changed is closed and replaced at every change of leader, of our
	// state, or of our readiness.
	changed chan struct{}
}

func newLeadership() *leadership {
	return &leadership{changed: make(chan struct{})}
}

func (l *leadership) current() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

func (l *leadership) broadcast() {
	l.mu.Lock()
	defer l.mu.Unlock()
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *leadership) setReady(term uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.readyTerm = term
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *leadership) readyIn(term uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return term != 0 && l.readyTerm == term
}

// observe runs as one goroutine until Close. raft reports leader and state
// changes through a non-blocking observer; a dropped observation is
// harmless because it can only be dropped while earlier ones are still
// queued, and each one makes this loop re-read raft's current state.
func (s *Store) observe() {
	defer s.wg.Done()
	// barrierTerm is the term for which a barrier was started; only this
	// goroutine uses it.
	var barrierTerm uint64
	check := func() {
		s.lead.broadcast()
		if s.raft.State() != raft.Leader {
			return
		}
		term := s.raft.CurrentTerm()
		if term == barrierTerm {
			return
		}
		barrierTerm = term
		s.wg.Add(1)
		go s.confirmLeadership(term)
	}
	check() // raft may have changed state before the observer was registered
	for {
		select {
		case <-s.obsCh:
			check()
		case <-s.stopObserve:
			return
		}
	}
}

// confirmLeadership commits a barrier in term and marks this server ready
// to lead once every earlier entry is applied. A lost leadership or a
// shutdown fails the barrier, which ends the goroutine.
func (s *Store) confirmLeadership(term uint64) {
	defer s.wg.Done()
	if err := s.raft.Barrier(0).Error(); err != nil {
		s.log.Debug("leader barrier failed", "term", term, "err", err)
		return
	}
	if s.raft.State() != raft.Leader || s.raft.CurrentTerm() != term {
		return
	}
	s.lead.setReady(term)
	s.log.Info("leading", "term", term, "applied_index", s.fsm.appliedIndex())
}

// LeadershipChanged returns a channel closed at the next change of leader or
// of this server's leadership. Take it before checking, then wait:
//
//	ch := s.LeadershipChanged()
//	if s.IsLeader() { ... }
//	<-ch
func (s *Store) LeadershipChanged() <-chan struct{} { return s.lead.current() }

// IsLeader reports whether this server is the raft leader and has applied
// everything committed before its term (see leadership).
func (s *Store) IsLeader() bool {
	return s.raft.State() == raft.Leader && s.lead.readyIn(s.raft.CurrentTerm())
}

// Leader returns the leader's id and raft address, or "" when unknown. A
// newly elected leader names itself only once IsLeader is true, so that
// callers forwarding to the leader do not loop back to it too early.
func (s *Store) Leader() (id, addr string) {
	a, i := s.raft.LeaderWithID()
	if string(i) == s.cfg.NodeID && !s.IsLeader() {
		return "", ""
	}
	return string(i), string(a)
}
