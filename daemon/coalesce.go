package daemon

import "sync"

// coalescer runs a function that brings something up to date with the
// newest state (it reads that state itself), one run at a time, merging
// the requests that arrive during a run into one run after it. Do returns
// once a run that started after Do was called has finished, with that
// run's error: the caller's change is then reflected, as if it had run the
// function itself, but a burst of N requests costs at most two runs, not
// N in series.
//
// The node's discovery updates are such a function (programming every
// task's DNS and VIP rules from ov.States()): called once per gossip hint,
// each call taking tens of milliseconds per task namespace, a burst of
// hints while 20 tasks started on a node queued ~28 s of programming
// behind one lock, and the agent's session, waiting for it on a network
// message, stopped reading its stream (the manager then judged the node
// DOWN). Coalesced, a caller waits for at most the run in progress and
// the next one.
type coalescer struct {
	run func() error

	mu        sync.Mutex
	cond      *sync.Cond
	running   bool
	requested uint64 // generations asked for
	done      uint64 // the newest generation a finished run covered
	err       error  // that run's error
}

func newCoalescer(run func() error) *coalescer {
	c := &coalescer{run: run}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// Do asks for a run and waits for one that started after this call.
func (c *coalescer) Do() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requested++
	gen := c.requested
	for c.running && c.done < gen {
		c.cond.Wait()
	}
	if c.done >= gen {
		return c.err // a run that started after our request covered it
	}
	// No run in progress, and ours not done: run, for every request
	// made so far, until no request is left uncovered.
	c.running = true
	for c.done < c.requested {
		target := c.requested
		c.mu.Unlock()
		err := c.run()
		c.mu.Lock()
		c.done, c.err = target, err
		c.cond.Broadcast()
		if c.done >= gen {
			break // ours is covered; waiters of later requests take over
		}
	}
	err := c.err
	c.running = false
	c.cond.Broadcast()
	return err
}
