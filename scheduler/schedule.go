package scheduler

import (
	"cmp"
	"container/heap"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Assignment places a pending task on a node.
type Assignment struct {
	TaskID, NodeID string
}

// Failure says why a pending task could not be placed.
type Failure struct {
	TaskID, Reason string
}

// cause is why a node cannot take a task. The order of the constants is the
// order in which causes are checked, and breaks ties between equal counts in
// a Failure's reason.
type cause uint8

const (
	fits cause = iota
	causeDown
	causeNotReady
	causePaused
	causeDrained
	causeConstraints
	causeMaxReplicas
	causeMemory
	causeCPU
	numCauses
)

// causeText names a cause after a node id: `node "n1" is not suitable: down`.
var causeText = [numCauses]string{
	causeDown:        "down",
	causeNotReady:    "not ready",
	causePaused:      "paused",
	causeDrained:     "drained",
	causeConstraints: "constraints not satisfied",
	causeMaxReplicas: "max replicas per node reached",
	causeMemory:      "insufficient memory",
	causeCPU:         "insufficient cpu",
}

// causeCount says a cause after a count of nodes, singular and plural:
// "1 is down", "3 lack memory".
var causeCount = [numCauses][2]string{
	causeDown:        {"is down", "are down"},
	causeNotReady:    {"is not ready", "are not ready"},
	causePaused:      {"is paused", "are paused"},
	causeDrained:     {"is drained", "are drained"},
	causeConstraints: {"does not satisfy the constraints", "do not satisfy the constraints"},
	causeMaxReplicas: {"has the maximum of the service's tasks per node", "have the maximum of the service's tasks per node"},
	causeMemory:      {"lacks memory", "lack memory"},
	causeCPU:         {"lacks CPU", "lack CPU"},
}

// nodeInfo is a node and its accounting during one Schedule call.
type nodeInfo struct {
	node *shoalv1.Node
	id   string
	// static is the part of eligibility that does not depend on the task:
	// readiness and availability (fits, causeNotReady, causePaused or
	// causeDrained).
	static cause
	// capCPU and capMem are the node's capacity; 0 means unknown (unlimited).
	capCPU, capMem   int64
	usedCPU, usedMem int64
	// tasks counts every task on the node, existing and assigned in the
	// batch (the current service's count is state.svcCount).
	tasks int
}

// placement is what a group of pending tasks asks of a node.
type placement struct {
	constraints []Constraint
	parseErr    error
	cpu, mem    int64
	maxPerNode  int64
	// spread are the label names of the spread preferences, outermost
	// first.
	spread  []string
	binpack bool
}

// state is one Schedule call's working set.
type state struct {
	nodes []nodeInfo // sorted by id
	byID  map[string]int
	// bySvc lists, per service id, the nodes with existing tasks of it.
	bySvc map[string][]svcOnNode
	// svcCount is the current service's task count per node index; it is
	// filled when a service starts and reset when it ends.
	svcCount []int
	// pool, held, holding: the spread fast path (pool.go). holding lists
	// the nodes with a task of the current service (svcCount > 0).
	pool    poolHeap
	held    []bool
	holding []int
	// pooled is the task count of a node's valid pool entry, -1 if none.
	pooled []int32
}

// svcOnNode is a node index and how many existing tasks of a service are
// on it.
type svcOnNode struct{ idx, count int }

// Schedule places pending tasks. nodes are the cluster's nodes; existing
// are the tasks already on nodes (ASSIGNED up to, not including, COMPLETE;
// others are ignored), which count towards resources and spread; pending
// are the tasks to place (tasks with node_id set may only go to that node).
// Results come in pending's sorted order: by service id, slot, task id. See
// the package documentation for the rules.
func Schedule(nodes []*shoalv1.Node, existing []*shoalv1.Task, pending []*shoalv1.Task) ([]Assignment, []Failure) {
	return SchedulePlaced(nodes, PlacedOf(existing), pending)
}

// SchedulePlaced is Schedule with the existing tasks given as what they
// take of each node (a Placed kept across batches). It does not change
// placed: the caller records the assignments it commits.
func SchedulePlaced(nodes []*shoalv1.Node, placed *Placed, pending []*shoalv1.Task) ([]Assignment, []Failure) {
	s := newState(nodes, placed)

	order := make([]*shoalv1.Task, 0, len(pending))
	for _, t := range pending {
		if t != nil {
			order = append(order, t)
		}
	}
	slices.SortFunc(order, func(a, b *shoalv1.Task) int {
		return cmp.Or(
			cmp.Compare(a.GetServiceId(), b.GetServiceId()),
			cmp.Compare(a.GetSlot(), b.GetSlot()),
			cmp.Compare(a.GetMeta().GetId(), b.GetMeta().GetId()),
		)
	})

	// results[i] is the node index order[i] went to, or -1 with reasons[i].
	results := make([]int, len(order))
	for i := range results {
		results[i] = -1
	}
	reasons := make([]string, len(order))
	for start := 0; start < len(order); {
		end := start + 1
		for end < len(order) && order[end].GetServiceId() == order[start].GetServiceId() {
			end++
		}
		s.scheduleService(order[start:end], results[start:end], reasons[start:end])
		start = end
	}

	var assigned []Assignment
	var failed []Failure
	for i, t := range order {
		if results[i] >= 0 {
			assigned = append(assigned, Assignment{TaskID: t.GetMeta().GetId(), NodeID: s.nodes[results[i]].id})
		} else {
			failed = append(failed, Failure{TaskID: t.GetMeta().GetId(), Reason: reasons[i]})
		}
	}
	return assigned, failed
}

func newState(nodes []*shoalv1.Node, placed *Placed) *state {
	s := &state{byID: make(map[string]int, len(nodes)), bySvc: map[string][]svcOnNode{}}
	sorted := make([]*shoalv1.Node, 0, len(nodes))
	for _, n := range nodes {
		if n != nil {
			sorted = append(sorted, n)
		}
	}
	slices.SortStableFunc(sorted, func(a, b *shoalv1.Node) int {
		return cmp.Compare(a.GetMeta().GetId(), b.GetMeta().GetId())
	})
	s.nodes = make([]nodeInfo, 0, len(sorted))
	for _, n := range sorted {
		id := n.GetMeta().GetId()
		if _, dup := s.byID[id]; dup {
			continue
		}
		s.byID[id] = len(s.nodes)
		res := n.GetDescription().GetResources()
		s.nodes = append(s.nodes, nodeInfo{
			node: n, id: id, static: staticCause(n),
			capCPU: res.GetNanoCpus(), capMem: res.GetMemoryBytes(),
		})
	}
	s.svcCount = make([]int, len(s.nodes))
	defer s.initPool()
	for id, u := range placed.nodes {
		i, ok := s.byID[id]
		if !ok {
			continue
		}
		n := &s.nodes[i]
		n.tasks += u.tasks
		n.usedCPU += u.cpu
		n.usedMem += u.mem
		for svc, count := range u.bySvc {
			s.bySvc[svc] = append(s.bySvc[svc], svcOnNode{idx: i, count: count})
		}
	}
	return s
}

// staticCause checks readiness and availability.
func staticCause(n *shoalv1.Node) cause {
	switch n.GetStatus().GetState() {
	case shoalv1.NodeState_NODE_STATE_READY:
	case shoalv1.NodeState_NODE_STATE_DOWN:
		return causeDown
	default:
		return causeNotReady
	}
	switch n.GetSpec().GetAvailability() {
	case shoalv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE:
		return fits
	case shoalv1.NodeAvailability_NODE_AVAILABILITY_PAUSE:
		return causePaused
	}
	return causeDrained
}

// scheduleService places the pending tasks of one service (sorted by slot,
// id) and writes each one's node index (or -1 and a reason) into results.
func (s *state) scheduleService(tasks []*shoalv1.Task, results []int, reasons []string) {
	svc := tasks[0].GetServiceId()
	for _, on := range s.bySvc[svc] {
		s.svcCount[on.idx] += on.count
		s.hold(on.idx)
	}
	defer s.releaseAll()

	// Group by placement, in order of first appearance: usually a service's
	// pending tasks share one spec, but during an update old and new may
	// ask for different things.
	type group struct {
		p       placement
		members []int // indexes into tasks
	}
	var groups []*group
	byKey := make(map[string]*group, 1)
	var last *group
	var lastTask *shoalv1.Task
	for i, t := range tasks {
		g := last
		if g == nil || !samePlacement(t, lastTask) {
			key := placementKey(t)
			if g = byKey[key]; g == nil {
				g = &group{p: placementOf(t)}
				byKey[key] = g
				groups = append(groups, g)
			}
		}
		g.members = append(g.members, i)
		last, lastTask = g, t
	}
	for _, g := range groups {
		s.scheduleGroup(&g.p, tasks, g.members, results, reasons)
	}
}

// samePlacement is the fast path of placementKey equality: consecutive
// tasks of a service nearly always ask the same.
func samePlacement(a, b *shoalv1.Task) bool {
	pa, pb := a.GetSpec().GetPlacement(), b.GetSpec().GetPlacement()
	ra, rb := a.GetSpec().GetResources().GetReservations(), b.GetSpec().GetResources().GetReservations()
	return ra.GetNanoCpus() == rb.GetNanoCpus() && ra.GetMemoryBytes() == rb.GetMemoryBytes() &&
		pa.GetMaxReplicasPerNode() == pb.GetMaxReplicasPerNode() &&
		pa.GetStrategy() == pb.GetStrategy() &&
		slices.Equal(pa.GetConstraints(), pb.GetConstraints()) &&
		slices.Equal(pa.GetSpread(), pb.GetSpread())
}

// placementKey identifies what a task asks of a node, so that tasks asking
// the same are evaluated together.
func placementKey(t *shoalv1.Task) string {
	spec := t.GetSpec()
	r := spec.GetResources().GetReservations()
	pl := spec.GetPlacement()
	var b strings.Builder
	b.WriteString(strconv.FormatInt(r.GetNanoCpus(), 10))
	b.WriteByte('/')
	b.WriteString(strconv.FormatInt(r.GetMemoryBytes(), 10))
	b.WriteByte('/')
	b.WriteString(strconv.FormatInt(pl.GetMaxReplicasPerNode(), 10))
	b.WriteByte('/')
	b.WriteString(pl.GetStrategy())
	for _, c := range pl.GetConstraints() {
		b.WriteByte(0)
		b.WriteString(c)
	}
	b.WriteByte(1)
	for _, p := range pl.GetSpread() {
		b.WriteByte(0)
		b.WriteString(p)
	}
	return b.String()
}

func placementOf(t *shoalv1.Task) placement {
	spec := t.GetSpec()
	pl := spec.GetPlacement()
	cs, err := ParseConstraints(pl.GetConstraints())
	var spread []string
	if err == nil {
		spread, err = ParseSpreads(pl.GetSpread())
	}
	if err == nil {
		_, err = ParseStrategy(pl.GetStrategy())
	}
	r := spec.GetResources().GetReservations()
	return placement{
		constraints: cs, parseErr: err,
		cpu: r.GetNanoCpus(), mem: r.GetMemoryBytes(),
		maxPerNode: pl.GetMaxReplicasPerNode(),
		spread:     spread,
		binpack:    pl.GetStrategy() == StrategyBinpack,
	}
}

// scheduleGroup places tasks that ask the same of a node.
func (s *state) scheduleGroup(p *placement, tasks []*shoalv1.Task, members []int, results []int, reasons []string) {
	if p.parseErr != nil {
		for _, m := range members {
			results[m], reasons[m] = -1, "invalid placement: "+p.parseErr.Error()
		}
		return
	}
	// Tasks bound to a node (global services, rebalance moves) first: they
	// have no choice, and placing them before the tree is built keeps its
	// keys current.
	var free []int
	for _, m := range members {
		nodeID := tasks[m].GetNodeId()
		if nodeID == "" {
			free = append(free, m)
			continue
		}
		i, ok := s.byID[nodeID]
		if !ok {
			results[m], reasons[m] = -1, fmt.Sprintf("node %q not found", nodeID)
			continue
		}
		c := s.nodes[i].static
		if c == fits && !matchAll(p.constraints, s.nodes[i].node) {
			c = causeConstraints
		}
		if c == fits {
			c = s.dynamicCause(i, p)
		}
		if c != fits {
			results[m], reasons[m] = -1, fmt.Sprintf("node %q is not suitable: %s", nodeID, causeText[c])
			continue
		}
		s.assign(i, p)
		results[m] = i
	}
	if len(free) == 0 {
		return
	}
	if len(p.spread) == 0 && !p.binpack && !noPool {
		s.scheduleFromPool(p, free, results, reasons)
		return
	}

	var counts [numCauses]int
	candidates := make([]int, 0, len(s.nodes))
	for i := range s.nodes {
		c := s.nodes[i].static
		if c == fits && !matchAll(p.constraints, s.nodes[i].node) {
			c = causeConstraints
		}
		if c != fits {
			counts[c]++
			continue
		}
		candidates = append(candidates, i)
	}
	root := s.buildTree(p, candidates)

	reason := "" // computed once the tree runs dry
	for _, m := range free {
		i, ok := s.pick(root, p, &counts)
		if !ok {
			if reason == "" {
				reason = failureReason(p, len(s.nodes), counts)
			}
			results[m], reasons[m] = -1, reason
			continue
		}
		results[m] = i
	}
}

// pick descends the tree to the preferred node that can take a task of the
// group, assigns the task to it and fixes the keys on the way back up.
// Nodes found unable to take it are dropped for good (counted in counts):
// usage only grows within a batch and every task of the group asks the
// same. A branch whose nodes are all dropped leaves its parent's heap.
func (s *state) pick(root *branch, p *placement, counts *[numCauses]int) (int, bool) {
	for len(root.kids.items) > 0 || len(root.nodes.items) > 0 {
		b := root
		for b.nodes.s == nil { // inner branch: take the preferred child
			if len(b.kids.items) == 0 {
				break
			}
			b = b.kids.items[0]
		}
		if b.nodes.s == nil || len(b.nodes.items) == 0 {
			s.prune(b)
			continue
		}
		i := b.nodes.items[0]
		if c := s.dynamicCause(i, p); c != fits {
			counts[c]++
			b.nodes.popTop()
			if len(b.nodes.items) == 0 {
				s.prune(b)
			}
			continue
		}
		s.assign(i, p)
		heap.Fix(&b.nodes, 0)
		for ; b.parent != nil; b = b.parent {
			b.count++
			heap.Fix(&b.parent.kids, b.pos)
		}
		b.count++
		return i, true
	}
	return -1, false
}

// prune takes an empty branch out of its parent's heap, and the parent out
// of its own when that empties it, up to the root.
func (s *state) prune(b *branch) {
	for b.parent != nil && len(b.kids.items) == 0 && len(b.nodes.items) == 0 {
		heap.Remove(&b.parent.kids, b.pos)
		b = b.parent
	}
}

// branch is a node of the spread-preference tree: the candidates that share
// the values of the first k preference labels. Leaves hold a heap of nodes
// (by strategy); inner branches a heap of children, fewest tasks of the
// service first (then value, so the result is deterministic). Without
// preferences the root is the only leaf.
type branch struct {
	value  string
	count  int // tasks of the service on the branch's candidates
	parent *branch
	pos    int // index in parent.kids.items
	kids   branchHeap
	nodes  nodeHeap // leaves only (nodes.s != nil)
}

// buildTree groups the candidate node indexes by the preference labels'
// values. A node without a label is grouped with the others lacking it,
// as if its value were "" (as swarm mode does).
func (s *state) buildTree(p *placement, candidates []int) *branch {
	root := &branch{}
	if len(p.spread) == 0 {
		root.nodes = newNodeHeap(s, p, candidates)
		for _, i := range candidates {
			root.count += s.svcCount[i]
		}
		heap.Init(&root.nodes)
		return root
	}
	// Sort by the label values (then index) so children come out in value
	// order and each leaf's nodes are contiguous.
	vals := make([][]string, len(s.nodes))
	for _, i := range candidates {
		v := make([]string, len(p.spread))
		labels := s.nodes[i].node.GetSpec().GetLabels()
		for k, l := range p.spread {
			v[k] = labels[l]
		}
		vals[i] = v
	}
	slices.SortFunc(candidates, func(a, b int) int {
		return cmp.Or(slices.Compare(vals[a], vals[b]), cmp.Compare(a, b))
	})
	var path []*branch // path[k]: the open branch at depth k+1
	for _, i := range candidates {
		parent := root
		for k := range p.spread {
			if k < len(path) && path[k].value == vals[i][k] && (k == 0 || path[k].parent == path[k-1]) {
				parent = path[k]
				continue
			}
			b := &branch{value: vals[i][k], parent: parent, pos: len(parent.kids.items)}
			parent.kids.items = append(parent.kids.items, b)
			path = append(path[:k], b)
			parent = b
		}
		if parent.nodes.s == nil {
			parent.nodes = newNodeHeap(s, p, nil)
		}
		parent.nodes.items = append(parent.nodes.items, i)
		for b := parent; b != nil; b = b.parent {
			b.count += s.svcCount[i]
		}
	}
	var initAll func(b *branch)
	initAll = func(b *branch) {
		if b.nodes.s != nil {
			heap.Init(&b.nodes)
			return
		}
		for _, k := range b.kids.items {
			initAll(k)
		}
		heap.Init(&b.kids)
	}
	initAll(root)
	return root
}

// dynamicCause checks what changes as tasks are placed: max replicas per
// node and reservations.
func (s *state) dynamicCause(i int, p *placement) cause {
	n := &s.nodes[i]
	if p.maxPerNode > 0 && int64(s.svcCount[i]) >= p.maxPerNode {
		return causeMaxReplicas
	}
	if p.mem > 0 && n.capMem > 0 && p.mem > n.capMem-n.usedMem {
		return causeMemory
	}
	if p.cpu > 0 && n.capCPU > 0 && p.cpu > n.capCPU-n.usedCPU {
		return causeCPU
	}
	return fits
}

func (s *state) assign(i int, p *placement) {
	n := &s.nodes[i]
	n.tasks++
	n.usedCPU += p.cpu
	n.usedMem += p.mem
	s.svcCount[i]++
	s.hold(i)
}

// failureReason says what the group asked for and counts the nodes by
// cause, most first: "no node has 2 GiB free: 3 lack memory, 1 is drained,
// 1 is down"; without reservations "no suitable node: ...".
func failureReason(p *placement, total int, counts [numCauses]int) string {
	var b strings.Builder
	var want []string
	if p.mem > 0 {
		want = append(want, FormatBytes(p.mem))
	}
	if p.cpu > 0 {
		want = append(want, FormatCPU(p.cpu))
	}
	if len(want) == 0 {
		b.WriteString("no suitable node")
	} else {
		b.WriteString("no node has ")
		b.WriteString(strings.Join(want, " and "))
		b.WriteString(" free")
	}
	if total == 0 {
		b.WriteString(": the cluster has no nodes")
		return b.String()
	}
	order := make([]cause, 0, numCauses)
	for c := causeDown; c < numCauses; c++ {
		if counts[c] > 0 {
			order = append(order, c)
		}
	}
	slices.SortStableFunc(order, func(x, y cause) int { return cmp.Compare(counts[y], counts[x]) })
	sep := ": "
	for _, c := range order {
		b.WriteString(sep)
		b.WriteString(strconv.Itoa(counts[c]))
		b.WriteByte(' ')
		if counts[c] == 1 {
			b.WriteString(causeCount[c][0])
		} else {
			b.WriteString(causeCount[c][1])
		}
		sep = ", "
	}
	return b.String()
}

// FormatBytes renders a reservation in binary units, as people write it:
// "2 GiB", "1.5 GiB", "256 MiB".
func FormatBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	v, u := float64(n), 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	return trimFloat(v) + " " + units[u]
}

// FormatCPU renders nano-CPUs: "0.5 CPU", "1 CPU", "2 CPUs".
func FormatCPU(nano int64) string {
	v := float64(nano) / 1e9
	if v > 1 {
		return trimFloat(v) + " CPUs"
	}
	return trimFloat(v) + " CPU"
}

func trimFloat(v float64) string {
	s := strconv.FormatFloat(v, 'f', 2, 64)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// nodeHeap orders a leaf's candidate node indexes by the strategy.
//
// spread: fewest tasks of the service, then fewest tasks overall, then
// node id (nodes are sorted by id, so the index breaks ties).
//
// binpack: the fullest node first — least free memory, then least free
// CPU (capacity minus reservations; a node that did not report a capacity
// counts as emptier than any that did), then most tasks overall, then node
// id. Only the resources the group reserves count, so without reservations
// the node with the most tasks wins, and a service piles onto one node
// until max_replicas_per_node or a resource stops it.
type nodeHeap struct {
	s       *state
	binpack bool
	// mem, cpu: whether the group reserves them (binpack compares only
	// those).
	mem, cpu bool
	items    []int
}

func newNodeHeap(s *state, p *placement, items []int) nodeHeap {
	return nodeHeap{s: s, binpack: p.binpack, mem: p.mem > 0, cpu: p.cpu > 0, items: items}
}

func (h *nodeHeap) Len() int { return len(h.items) }

func (h *nodeHeap) Less(a, b int) bool {
	i, j := h.items[a], h.items[b]
	ni, nj := &h.s.nodes[i], &h.s.nodes[j]
	if h.binpack {
		if fi, fj := free(ni.capMem, ni.usedMem), free(nj.capMem, nj.usedMem); h.mem && fi != fj {
			return fi < fj
		}
		if fi, fj := free(ni.capCPU, ni.usedCPU), free(nj.capCPU, nj.usedCPU); h.cpu && fi != fj {
			return fi < fj
		}
		if ni.tasks != nj.tasks {
			return ni.tasks > nj.tasks
		}
		return i < j
	}
	if ci, cj := h.s.svcCount[i], h.s.svcCount[j]; ci != cj {
		return ci < cj
	}
	if ni.tasks != nj.tasks {
		return ni.tasks < nj.tasks
	}
	return i < j
}

// free is a capacity minus its reservations; an unknown capacity (0) is
// more than any known one.
func free(capacity, used int64) int64 {
	if capacity <= 0 {
		return math.MaxInt64
	}
	return capacity - used
}

// popTop removes the top without boxing it (heap.Pop returns an any).
func (h *nodeHeap) popTop() {
	n := len(h.items) - 1
	h.items[0] = h.items[n]
	h.items = h.items[:n]
	if n > 0 {
		heap.Fix(h, 0)
	}
}

func (h *nodeHeap) Swap(a, b int) { h.items[a], h.items[b] = h.items[b], h.items[a] }

func (h *nodeHeap) Push(x any) { h.items = append(h.items, x.(int)) }

func (h *nodeHeap) Pop() any {
	last := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return last
}

// branchHeap orders sibling branches: fewest tasks of the service, then
// value. It keeps each branch's pos current for heap.Fix and heap.Remove.
type branchHeap struct{ items []*branch }

func (h *branchHeap) Len() int { return len(h.items) }

func (h *branchHeap) Less(a, b int) bool {
	x, y := h.items[a], h.items[b]
	if x.count != y.count {
		return x.count < y.count
	}
	return x.value < y.value
}

func (h *branchHeap) Swap(a, b int) {
	h.items[a], h.items[b] = h.items[b], h.items[a]
	h.items[a].pos, h.items[b].pos = a, b
}

func (h *branchHeap) Push(x any) {
	b := x.(*branch)
	b.pos = len(h.items)
	h.items = append(h.items, b)
}

func (h *branchHeap) Pop() any {
	last := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return last
}
