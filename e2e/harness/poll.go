package harness

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// permanentError marks an error that retrying cannot fix (a process that
// should keep running has exited, say): Poll and Eventually stop at once.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent wraps err so that Poll and Eventually give up immediately
// instead of retrying until their deadline.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was wrapped by Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// Poll calls fn every interval until it returns nil, it returns a Permanent
// error, or ctx ends. On a timeout the returned error names the last error
// fn returned, which is what explains the timeout. fn is called at once, then
// after each interval.
func Poll(ctx context.Context, interval time.Duration, fn func() error) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var last error
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			return nil
		}
		if IsPermanent(err) {
			return err
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w after %d attempts; last error: %w", ctx.Err(), attempt, last)
		case <-tick.C:
		}
	}
}

// Eventually polls fn every interval until it returns nil and fails the test
// (t.Fatal) with fn's last error if that has not happened within timeout, or
// at once if fn returns a Permanent error. Only call it from the test's own
// goroutine; elsewhere use Poll.
func Eventually(t testing.TB, timeout, interval time.Duration, fn func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	if err := Poll(ctx, interval, fn); err != nil {
		if IsPermanent(err) {
			t.Fatalf("gave up after %v: %v", time.Since(start).Round(time.Millisecond), err)
		}
		t.Fatalf("condition not met within %v: %v", timeout, err)
	}
}
