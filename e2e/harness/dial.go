package harness

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	shoalnet "github.com/shoal-dev/shoal/agent/network"
)

// DialContext opens a connection from inside the host's network namespace,
// from the test process itself: the socket is made on an OS thread moved
// into the namespace for the dial (and back after it), and a socket stays
// in the namespace it was made in whichever thread uses it later. So Go
// code of the test (an HTTP client, a registry push) can reach addresses
// that only exist on the host: its fabric address, its node bridge and the
// task addresses behind it.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := shoalnet.DialContextIn(ctx, netnsPath(h.NS), network, addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s from %s: %w", network, addr, h, err)
	}
	return c, nil
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
