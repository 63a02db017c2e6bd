package harness

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// DialContext opens a connection from inside the host's network namespace,
// from the test process itself: the socket is made on an OS thread moved
// into the namespace for the dial (and back after it), and a socket stays
// in the namespace it was made in whichever thread uses it later. So Go
// code of the test (an HTTP client, a registry push) can reach addresses
// that only exist on the host: its fabric address, its node bridge and the
// task addresses behind it.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// The thread must go back to its own namespace and live on: were
		// it to end (a goroutine that exits while locked ends its thread),
		// every process the harness started from it would get its
		// Pdeathsig, which the kernel sends when the parent *thread* dies.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer orig.Close()
		c, err := func() (net.Conn, error) {
			f, err := os.Open(netnsPath(h.NS))
			if err != nil {
				return nil, err
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				return nil, fmt.Errorf("setns %s: %w", h.NS, err)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}()
		if rerr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); rerr != nil {
			// Neither unlock (the thread would run other goroutines in the
			// wrong namespace) nor end the thread (see above): park it for
			// good. The connection, if any, is fine.
			ch <- result{c, err}
			select {}
		}
		runtime.UnlockOSThread()
		ch <- result{c, err}
	}()
	r := <-ch
	if r.err != nil {
		return nil, fmt.Errorf("dial %s %s from %s: %w", network, addr, h, r.err)
	}
	return r.c, nil
}

// HTTPClient is an HTTP client whose connections start inside the host's
// network namespace (see DialContext): it sees what a program running on
// the host would see.
func (h *Host) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: h.Transport()}
}

// Transport is an http.RoundTripper dialling from inside the host's
// network namespace, without keep-alive (nothing to close afterwards).
func (h *Host) Transport() *http.Transport {
	return &http.Transport{DialContext: h.DialContext, DisableKeepAlives: true, Proxy: nil}
}
