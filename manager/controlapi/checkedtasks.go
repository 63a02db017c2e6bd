package controlapi

import "sync"

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
type checkedTasks struct {
	mu sync.Mutex // guards m
	m  map[string]uint64
}

// has says whether the service's task at version was checked here.
func (c *checkedTasks) has(id string, version uint64) bool {
	if version == 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[id] == version
}

// add records that the service's task at version was checked here. A
// later version is never replaced by an earlier one (two writes with
// ignore_version may return out of order).
func (c *checkedTasks) add(id string, version uint64) {
	if version == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCheckedTasks {
		c.m = map[string]uint64{}
	}
	if c.m[id] < version {
		c.m[id] = version
	}
}

// forget drops a removed service.
func (c *checkedTasks) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
}
