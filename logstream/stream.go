package logstream

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Batching of log responses: a message goes out when it holds BatchLines
// lines or when its first line has waited BatchDelay, whichever comes
// first, so a busy log costs few messages and a quiet one is still seen at
// once.
const (
	BatchLines = 256
	BatchDelay = 50 * time.Millisecond
)

// Warnings collects warnings raised while streaming; SendBatches takes
// them with its next message. Safe for concurrent use.
type Warnings struct {
	mu    sync.Mutex // guards list
	list  []string
	nudge chan struct{} // has a value when list may be non-empty
}

// NewWarnings returns an empty collection.
func NewWarnings() *Warnings { return &Warnings{nudge: make(chan struct{}, 1)} }

// Add queues a warning; the sender sends it promptly.
func (w *Warnings) Add(msg string) {
	w.mu.Lock()
	w.list = append(w.list, msg)
	w.mu.Unlock()
	select {
	case w.nudge <- struct{}{}:
	default:
	}
}

// UnknownTaskWarning is the agent API's (TaskLogs') warning for a task the node does not
// hold (never had, or has removed with its log). Callers that ask for
// tasks which may be gone (a service's history) recognise it by equality.
func UnknownTaskWarning(taskID, nodeID string) string {
	return fmt.Sprintf("task %q is not on node %q (any more): its logs are not available", taskID, nodeID)
}

func (w *Warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.list
	w.list = nil
	return out
}

// SendBatches sends what arrives on in, batched, with pending warnings,
// until in closes (then flushes and returns nil), ctx ends or sending
// fails.
func SendBatches(ctx context.Context, in <-chan *shoalv1.LogMessage, w *Warnings, send func(*shoalv1.LogsResponse) error) error {
	var batch []*shoalv1.LogMessage
	timer := time.NewTimer(BatchDelay)
	timer.Stop()
	flush := func() error {
		warnings := w.take()
		if len(batch) == 0 && len(warnings) == 0 {
			return nil
		}
		timer.Stop()
		err := send(&shoalv1.LogsResponse{Messages: batch, Warnings: warnings})
		batch = nil
		return err
	}
	for {
		select {
		case m, ok := <-in:
			if !ok {
				return flush()
			}
			if len(batch) == 0 {
				timer.Reset(BatchDelay)
			}
			batch = append(batch, m)
			if len(batch) >= BatchLines {
				if err := flush(); err != nil {
					return err
				}
			}
		case <-timer.C:
			if err := flush(); err != nil {
				return err
			}
		case <-w.nudge:
			if err := flush(); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// FanIn forwards every input to one channel, closed when all inputs are.
func FanIn(ctx context.Context, ins []<-chan *shoalv1.LogMessage) <-chan *shoalv1.LogMessage {
	out := make(chan *shoalv1.LogMessage, 64)
	var wg sync.WaitGroup
	for _, in := range ins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range in {
				select {
				case out <- m:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	return out
}

// MergeByTime merges inputs that are each in time order into one stream
// in time order (ties: the earlier input first). It holds one message per
// input, so memory does not grow with the logs' size; a linear scan for
// the smallest head is cheap for the few tasks one node runs of a service.
func MergeByTime(ctx context.Context, ins []<-chan *shoalv1.LogMessage) <-chan *shoalv1.LogMessage {
	out := make(chan *shoalv1.LogMessage, 64)
	go func() {
		defer close(out)
		heads := make([]*shoalv1.LogMessage, len(ins))
		live := slices.Clone(ins)
		recv := func(i int) bool {
			select {
			case m, ok := <-live[i]:
				if !ok {
					live[i] = nil
				}
				heads[i] = m
				return true
			case <-ctx.Done():
				return false
			}
		}
		for i := range live {
			if !recv(i) {
				return
			}
		}
		for {
			best := -1
			for i, h := range heads {
				if h != nil && (best < 0 || h.GetTime().AsTime().Before(heads[best].GetTime().AsTime())) {
					best = i
				}
			}
			if best < 0 {
				return
			}
			select {
			case out <- heads[best]:
			case <-ctx.Done():
				return
			}
			heads[best] = nil
			if live[best] != nil && !recv(best) {
				return
			}
		}
	}()
	return out
}
