package network

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// TestDialContextIn: a connection made with DialContextIn starts inside
// the given namespace: it reaches a listener on that namespace's loopback,
// which the caller's own namespace does not have.
func TestDialContextIn(t *testing.T) {
	inFreshNetNS(t)
	m := newTestManager(t, Config{})
	att := setup(t, m, "dialtask")
	serveHello(t, att.NetNSPath, "dialtask")

	if c, err := net.DialTimeout("tcp4", "127.0.0.1:8080", time.Second); err == nil {
		c.Close()
		t.Fatal("the test's own namespace has a listener on 127.0.0.1:8080: the check below would prove nothing")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialContextIn(ctx, att.NetNSPath, "tcp4", "127.0.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "hello from dialtask" {
		t.Errorf("read %q, %v", b, err)
	}
	if _, err := DialContextIn(ctx, "/nonexistent/netns", "tcp4", "127.0.0.1:8080"); err == nil {
		t.Error("dialling from a namespace file that does not exist: no error")
	}
}
