package controlapi

import (
	"bytes"
	"sync"
)

// maxCheckedTasks bounds checkedTasks: past it the memo starts afresh (the
// next update of each service checks its task once more).
const maxCheckedTasks = 100_000

// checkedTasks remembers, per service id, the version (raft index) of a
// service write this process made after checking its task with the
// current specrules: the task stored at that version is one these rules
// accept. An UpdateService that leaves the task as it is stored at a
// remembered version skips the task's rules (specrules.ServiceUpdate),
// which were a third of its validation (the image reference's parser
// above all).
//
// Only this process's own writes go in, so a task stored by an older
// release under older rules, or written at a version this process did not
// write (another leader, the orchestrator's status writes), is checked in
// full as before and refused with the same error if today's rules refuse
// it. A version is a raft index and names one write, so a remembered
// version never stands for another task.
//
// Beside the version it keeps the task's deterministic encoding when the
// write that stored it had one at hand (UpdateService encodes the task it
// was sent to compare it; CreateService does not): the next UpdateService
// of that version then encodes only the task it was sent, not the stored
// one (sameEncoding). The encoding is of the very task written at that
// version, so it is the stored task's (the store keeps a copy of what it
// was given). The encodings are bounded all services together
// (maxMemoBytes), not only one by one: past that a version is remembered
// without its encoding.
type checkedTasks struct {
	mu    sync.Mutex // guards m, the encodings in it and bytes
	m     map[string]checkedTask
	bytes int // the capacities of the encodings in m
}

// checkedTask is one service's memo: the version written and, when known,
// the encoding of its task (nil: not known).
type checkedTask struct {
	version uint64
	task    []byte
}

// has says whether the service's task at version was checked here.
func (c *checkedTasks) has(id string, version uint64) bool {
	if version == 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[id].version == version
}

// sameEncoding compares enc with the encoding remembered for the
// service's task at version: known is false when the memo has no
// encoding of that version (then same is false too).
func (c *checkedTasks) sameEncoding(id string, version uint64, enc []byte) (known, same bool) {
	if version == 0 || enc == nil {
		return false, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[id]
	if e.version != version || e.task == nil {
		return false, false
	}
	return true, bytes.Equal(e.task, enc)
}

// add records that the service's task at version was checked here. A
// later version is never replaced by an earlier one (two writes with
// ignore_version may return out of order).
func (c *checkedTasks) add(id string, version uint64) {
	c.addEncoded(id, version, nil)
}

// addEncoded is add that also remembers enc, the deterministic encoding
// of the task written at version (nil: none), while the memo's encodings
// stay within maxMemoBytes. enc is copied (into the entry's own buffer
// when it fits: one service's memo is rewritten on every update of it).
func (c *checkedTasks) addEncoded(id string, version uint64, enc []byte) {
	if version == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCheckedTasks {
		c.m, c.bytes = map[string]checkedTask{}, 0
	}
	e := c.m[id]
	if e.version >= version {
		return
	}
	e.version = version
	switch {
	case enc == nil || len(enc) > maxMemoTaskBytes:
		c.bytes -= cap(e.task)
		e.task = nil
	case len(enc) <= cap(e.task):
		e.task = append(e.task[:0], enc...)
	case c.bytes-cap(e.task)+len(enc) > maxMemoBytes:
		c.bytes -= cap(e.task)
		e.task = nil
	default:
		c.bytes -= cap(e.task)
		e.task = make([]byte, len(enc))
		copy(e.task, enc)
		c.bytes += cap(e.task)
	}
	c.m[id] = e
}

// maxMemoTaskBytes bounds an encoding kept in the memo: a larger task is
// compared by encoding both sides, as without the memo.
const maxMemoTaskBytes = 4 << 10

// maxMemoBytes bounds the encodings the memo keeps, all services
// together: maxCheckedTasks tasks of maxMemoTaskBytes would be ~400 MiB
// on every manager that ever led, where the versions alone are a few MiB
// (TestCheckedTasksEncodingsBounded). 16 MiB keeps every service's
// encoding up to ~50,000 services of a typical few-hundred-byte task.
const maxMemoBytes = 16 << 20

// carry records that the service's task at version to is the one at
// version from, with its encoding, when the memo has both for from (a
// patch: the task stays as stored). It reports false otherwise; the
// caller then records what it knows of to.
func (c *checkedTasks) carry(id string, from, to uint64) bool {
	if from == 0 || to <= from {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[id]
	if !ok || e.version != from || e.task == nil {
		return false
	}
	e.version = to
	c.m[id] = e
	return true
}

// forget drops a removed service.
func (c *checkedTasks) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bytes -= cap(c.m[id].task)
	delete(c.m, id)
}
