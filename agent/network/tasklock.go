package network

import (
	"context"
	"sync"
)

// taskLocks serialises Setup and Teardown per task id while different
// tasks proceed in parallel.
type taskLocks struct {
	mu sync.Mutex            // guards m
	m  map[string]*taskEntry // present while held or waited for
}

type taskEntry struct {
	sem  chan struct{} // capacity 1: holding the token is holding the lock
	refs int           // holders and waiters; guarded by taskLocks.mu
}

// lock takes id's lock, or fails when ctx ends first. The returned
// function releases it.
func (l *taskLocks) lock(ctx context.Context, id string) (func(), error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*taskEntry{}
	}
	e := l.m[id]
	if e == nil {
		e = &taskEntry{sem: make(chan struct{}, 1)}
		l.m[id] = e
	}
	e.refs++
	l.mu.Unlock()

	select {
	case e.sem <- struct{}{}:
		return func() { <-e.sem; l.put(id, e) }, nil
	case <-ctx.Done():
		l.put(id, e)
		return nil, ctx.Err()
	}
}

func (l *taskLocks) put(id string, e *taskEntry) {
	l.mu.Lock()
	e.refs--
	if e.refs == 0 {
		delete(l.m, id)
	}
	l.mu.Unlock()
}
