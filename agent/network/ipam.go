package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
)

// ipamState is the allocation table of one subnet: pure data, no I/O, no
// locking. Only the allocator's loop touches it.
type ipamState struct {
	subnet netip.Prefix
	first  netip.Addr // first task address (gateway + 1)
	last   netip.Addr // last task address (broadcast - 1)
	size   int        // number of task addresses
	byTask map[string]netip.Addr
	byAddr map[netip.Addr]string
	// next is where the next search starts (next-fit): a freed address
	// is handed out again only after the rest of the range was used, so
	// stale ARP/conntrack entries of a dead task rarely meet a new one.
	next netip.Addr
}

func newIPAMState(subnet netip.Prefix) *ipamState {
	s := &ipamState{
		subnet: subnet,
		first:  gatewayOf(subnet).Next(),
		last:   broadcastOf(subnet).Prev(),
		size:   1<<(32-subnet.Bits()) - 3, // network, gateway, broadcast
		byTask: map[string]netip.Addr{},
		byAddr: map[netip.Addr]string{},
	}
	s.next = s.first
	return s
}

// allocate returns taskID's address, allocating one if it has none
// (fresh is then true).
func (s *ipamState) allocate(taskID string) (addr netip.Addr, fresh bool, err error) {
	if a, ok := s.byTask[taskID]; ok {
		return a, false, nil
	}
	if len(s.byTask) >= s.size {
		return netip.Addr{}, false, fmt.Errorf("%w: no free address for task %q in %s: all %d task addresses are in use (the gateway, network and broadcast addresses are reserved)",
			ErrSubnetExhausted, taskID, s.subnet, s.size)
	}
	a := s.next
	for {
		if _, used := s.byAddr[a]; !used {
			break
		}
		a = s.after(a)
	}
	s.byTask[taskID] = a
	s.byAddr[a] = taskID
	s.next = s.after(a)
	return a, true, nil
}

// after is the task address following a, wrapping around.
func (s *ipamState) after(a netip.Addr) netip.Addr {
	if a == s.last {
		return s.first
	}
	return a.Next()
}

// release frees taskID's address; it reports what was freed.
func (s *ipamState) release(taskID string) (netip.Addr, bool) {
	a, ok := s.byTask[taskID]
	if ok {
		delete(s.byTask, taskID)
		delete(s.byAddr, a)
	}
	return a, ok
}

func (s *ipamState) tasks() []string {
	ids := make([]string, 0, len(s.byTask))
	for id := range s.byTask {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// ipamFileV1 is the on-disk form of ipamState.
type ipamFileV1 struct {
	Version     int               `json:"version"`
	Subnet      string            `json:"subnet"`
	Next        string            `json:"next,omitempty"`
	Allocations map[string]string `json:"allocations"` // task id → address
}

func (s *ipamState) marshal() ([]byte, error) {
	f := ipamFileV1{Version: 1, Subnet: s.subnet.String(), Next: s.next.String(), Allocations: make(map[string]string, len(s.byTask))}
	for id, a := range s.byTask {
		f.Allocations[id] = a.String()
	}
	return json.MarshalIndent(f, "", "  ")
}

// loadIPAM reads path (a missing file is an empty table). Allocations
// made in another subnet are refused rather than dropped: their
// namespaces may still be in use.
func loadIPAM(path string, subnet netip.Prefix) (*ipamState, error) {
	s := newIPAMState(subnet)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read IPAM state: %w", err)
	}
	var f ipamFileV1
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%w: IPAM state %s is corrupt: %v", ErrFailedPrecondition, path, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("%w: IPAM state %s has version %d, want 1", ErrFailedPrecondition, path, f.Version)
	}
	if f.Subnet != subnet.String() {
		if len(f.Allocations) > 0 {
			return nil, fmt.Errorf("%w: IPAM state %s holds %d allocations in subnet %s; tear those tasks down before changing the subnet to %s",
				ErrFailedPrecondition, path, len(f.Allocations), f.Subnet, subnet)
		}
		return s, nil
	}
	for id, as := range f.Allocations {
		a, err := netip.ParseAddr(as)
		if err != nil || !subnet.Contains(a) || a.Less(s.first) || s.last.Less(a) {
			return nil, fmt.Errorf("%w: IPAM state %s: task %q has address %q, not a task address of %s", ErrFailedPrecondition, path, id, as, subnet)
		}
		if other, dup := s.byAddr[a]; dup {
			return nil, fmt.Errorf("%w: IPAM state %s: address %s is given to both %q and %q", ErrFailedPrecondition, path, a, other, id)
		}
		s.byTask[id] = a
		s.byAddr[a] = id
	}
	if n, err := netip.ParseAddr(f.Next); err == nil && !n.Less(s.first) && !s.last.Less(n) {
		s.next = n
	}
	return s, nil
}

// writeFileAtomic replaces path with data so that a crash leaves either
// the old or the new content: temp file, fsync, rename, fsync of the dir.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// allocator owns an ipamState in one goroutine (run) and persists it.
// Requests that queue up while a write is in flight are applied together
// and written once (group commit), so 100 concurrent Setups cost a few
// fsyncs, not 100.
type allocator struct {
	path  string
	state *ipamState // owned by run
	reqs  chan *ipamReq
	quit  chan struct{}
	done  chan struct{}
	// ids is the sorted task ids of the last committed state, published
	// by run for List (a cheap read without a round trip).
	ids atomic.Pointer[[]string]
	// stopOnce guards closing quit.
	stopOnce sync.Once
}

type ipamOp int

const (
	opAllocate ipamOp = iota
	opRelease
)

type ipamReq struct {
	op     ipamOp
	taskID string
	reply  chan ipamResp // buffered (1): run never blocks on a reply
}

type ipamResp struct {
	addr  netip.Addr
	fresh bool // allocate: newly allocated; release: something was freed
	err   error
}

func newAllocator(path string, state *ipamState) *allocator {
	a := &allocator{
		path:  path,
		state: state,
		reqs:  make(chan *ipamReq),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	ids := state.tasks()
	a.ids.Store(&ids)
	go a.run()
	return a
}

func (a *allocator) run() {
	defer close(a.done)
	for {
		var batch []*ipamReq
		select {
		case r := <-a.reqs:
			batch = append(batch, r)
		case <-a.quit:
			return
		}
	drain:
		for {
			select {
			case r := <-a.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		a.apply(batch)
	}
}

// apply performs batch, persists the result once and answers every
// request. If the write fails the whole batch is undone and fails.
func (a *allocator) apply(batch []*ipamReq) {
	s := a.state
	resps := make([]ipamResp, len(batch))
	var undo []func()
	oldNext := s.next
	for i, r := range batch {
		switch r.op {
		case opAllocate:
			addr, fresh, err := s.allocate(r.taskID)
			resps[i] = ipamResp{addr: addr, fresh: fresh, err: err}
			if fresh {
				id := r.taskID
				undo = append(undo, func() { s.release(id) })
			}
		case opRelease:
			addr, freed := s.release(r.taskID)
			resps[i] = ipamResp{addr: addr, fresh: freed}
			if freed {
				id := r.taskID
				undo = append(undo, func() { s.byTask[id] = addr; s.byAddr[addr] = id })
			}
		}
	}
	if len(undo) > 0 {
		data, err := s.marshal()
		if err == nil {
			err = writeFileAtomic(a.path, data)
		}
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
			s.next = oldNext
			err = fmt.Errorf("persist IPAM state: %w", err)
			for i := range resps {
				if resps[i].err == nil {
					resps[i] = ipamResp{err: err}
				}
			}
		} else {
			ids := s.tasks()
			a.ids.Store(&ids)
		}
	}
	for i, r := range batch {
		r.reply <- resps[i]
	}
}

func (a *allocator) do(op ipamOp, taskID string) ipamResp {
	r := &ipamReq{op: op, taskID: taskID, reply: make(chan ipamResp, 1)}
	select {
	case a.reqs <- r:
	case <-a.done:
		return ipamResp{err: ErrClosed}
	}
	// No ctx here on purpose: once sent, the request is applied, and the
	// caller must learn the outcome to undo it (run answers within one
	// file write).
	return <-r.reply
}

func (a *allocator) allocate(taskID string) (netip.Addr, bool, error) {
	r := a.do(opAllocate, taskID)
	return r.addr, r.fresh, r.err
}

func (a *allocator) release(taskID string) error {
	return a.do(opRelease, taskID).err
}

// list returns the task ids that hold an address, sorted.
func (a *allocator) list() []string {
	return slices.Clone(*a.ids.Load())
}

func (a *allocator) stop() {
	a.stopOnce.Do(func() { close(a.quit) })
	<-a.done
}
