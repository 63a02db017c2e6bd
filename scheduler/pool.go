package scheduler

import "container/heap"

// The pool is the fast path of the spread strategy without preferences,
// the common case: it keeps a group from touching every node.
//
// Under spread a node without a task of the service (svcCount 0) always
// beats one with, and among those the order — (tasks overall, node id) —
// is the same for every service. So one heap over the whole cluster's ready
// and active nodes, keyed by (tasks, index), serves every group of the
// call; only the nodes holding tasks of the current service (few: at most
// its task count) leave it while that service is scheduled ("held") and go
// to a small per-group heap keyed by (svcCount, tasks, index), as before.
// A group takes the pool's top while it fits, else the small heap's. Nodes
// the group cannot use (constraints, resources) are popped and set aside
// until the group ends. Entries are not updated in place: an assignment
// pushes a fresh entry when the node returns (end of its service) and
// entries whose task count is stale, or whose node is held, are dropped
// when they reach the top. A pick is O(log nodes) amortised, plus the
// nodes skipped, each skipped once per group.

// noPool makes every group build its own heap (the pool's reference, for
// tests).
var noPool = false

// poolEntry is a node index and its task count when pushed.
type poolEntry struct {
	tasks, idx int32
}

// poolHeap is a binary min-heap of entries by (tasks, idx), written out
// rather than through container/heap, whose interface boxes every pushed
// and popped value (an allocation each).
type poolHeap []poolEntry

func (e poolEntry) less(f poolEntry) bool {
	if e.tasks != f.tasks {
		return e.tasks < f.tasks
	}
	return e.idx < f.idx
}

func (h *poolHeap) push(e poolEntry) {
	*h = append(*h, e)
	q := *h
	for j := len(q) - 1; j > 0; {
		parent := (j - 1) / 2
		if !q[j].less(q[parent]) {
			break
		}
		q[j], q[parent] = q[parent], q[j]
		j = parent
	}
}

func (h *poolHeap) pop() poolEntry {
	q := *h
	top := q[0]
	n := len(q) - 1
	q[0] = q[n]
	q = q[:n]
	*h = q
	h.down(0)
	return top
}

func (h poolHeap) down(i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h[r].less(h[l]) {
			m = r
		}
		if !h[m].less(h[i]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

func (h poolHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

// initPool fills the pool with the nodes that can take tasks at all.
func (s *state) initPool() {
	s.held = make([]bool, len(s.nodes))
	s.pooled = make([]int32, len(s.nodes))
	s.pool = make(poolHeap, 0, len(s.nodes))
	for i := range s.nodes {
		s.pooled[i] = -1
		if s.nodes[i].static == fits {
			s.pool = append(s.pool, poolEntry{tasks: int32(s.nodes[i].tasks), idx: int32(i)})
			s.pooled[i] = int32(s.nodes[i].tasks)
		}
	}
	s.pool.init()
}

// pushPool puts a node back into the pool with its current task count,
// unless an entry with that count is already there.
func (s *state) pushPool(i int) {
	t := int32(s.nodes[i].tasks)
	if s.nodes[i].static != fits || s.pooled[i] == t {
		return
	}
	s.pooled[i] = t
	s.pool.push(poolEntry{tasks: t, idx: int32(i)})
}

// popPool removes the pool's top entry.
func (s *state) popPool() poolEntry {
	e := s.pool.pop()
	if s.pooled[e.idx] == e.tasks {
		s.pooled[e.idx] = -1
	}
	return e
}

// hold takes a node out of the pool while the current service has a task
// on it.
func (s *state) hold(i int) {
	if !s.held[i] {
		s.held[i] = true
		s.holding = append(s.holding, i)
	}
}

// releaseAll returns the held nodes to the pool with their current task
// count, at the end of a service.
func (s *state) releaseAll() {
	for _, i := range s.holding {
		s.held[i] = false
		s.svcCount[i] = 0
		s.pushPool(i)
	}
	s.holding = s.holding[:0]
}

// poolTop returns the pool's best node that the group can use, setting
// aside (into aside) the ones it cannot and dropping stale entries.
func (s *state) poolTop(p *placement, aside *[]poolEntry) (int, bool) {
	for len(s.pool) > 0 {
		e := s.pool[0]
		i := int(e.idx)
		if s.held[i] || int(e.tasks) != s.nodes[i].tasks {
			s.popPool() // stale: the node is held or has a fresher entry
			continue
		}
		if !matchAll(p.constraints, s.nodes[i].node) || s.dynamicCause(i, p) != fits {
			*aside = append(*aside, s.popPool())
			continue
		}
		return i, true
	}
	return -1, false
}

// scheduleFromPool places a spread group's free tasks (no preferences).
func (s *state) scheduleFromPool(p *placement, free []int, results []int, reasons []string) {
	// The held nodes (tasks of the service on them) that the group may use.
	local := nodeHeap{s: s}
	for _, i := range s.holding {
		if s.nodes[i].static == fits && matchAll(p.constraints, s.nodes[i].node) {
			local.items = append(local.items, i)
		}
	}
	heap.Init(&local)
	var aside []poolEntry
	defer func() {
		for _, e := range aside {
			if !s.held[e.idx] {
				s.pushPool(int(e.idx))
			}
		}
	}()
	reason := ""
	for _, m := range free {
		i, ok := s.poolTop(p, &aside)
		if ok {
			s.popPool()
			s.assign(i, p) // holds it
			local.items = append(local.items, i)
			heap.Fix(&local, len(local.items)-1)
			results[m] = i
			continue
		}
		for len(local.items) > 0 {
			j := local.items[0]
			if s.dynamicCause(j, p) != fits {
				local.popTop() // for good: usage only grows
				continue
			}
			s.assign(j, p)
			heap.Fix(&local, 0)
			i, ok = j, true
			break
		}
		if ok {
			results[m] = i
			continue
		}
		if reason == "" {
			reason = s.failureScan(p)
		}
		results[m], reasons[m] = -1, reason
	}
}

// failureScan counts every node by why it cannot take a task of the group
// now, for the failure reason.
func (s *state) failureScan(p *placement) string {
	var counts [numCauses]int
	for i := range s.nodes {
		c := s.nodes[i].static
		if c == fits && !matchAll(p.constraints, s.nodes[i].node) {
			c = causeConstraints
		}
		if c == fits {
			c = s.dynamicCause(i, p)
		}
		counts[c]++
	}
	return failureReason(p, len(s.nodes), counts)
}
