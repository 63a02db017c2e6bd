package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// frameCounter parses what a client sends on one connection (a copy of
// the bytes the server reads) and counts its DATA frames and its PINGs
// that are not acknowledgements.
type frameCounter struct {
	mu          sync.Mutex
	data, pings int
	err         error
}

func (c *frameCounter) counts() (data, pings int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.data, c.pings, c.err
}

func (c *frameCounter) parse(r io.Reader) {
	preface := make([]byte, len(http2.ClientPreface))
	_, err := io.ReadFull(r, preface)
	fr := http2.NewFramer(nil, r)
	for err == nil {
		var f http2.Frame
		if f, err = fr.ReadFrame(); err != nil {
			break
		}
		c.mu.Lock()
		switch f := f.(type) {
		case *http2.DataFrame:
			c.data++
		case *http2.PingFrame:
			if !f.IsAck() {
				c.pings++
			}
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
}

// teeListener hands the server connections whose incoming bytes are also
// parsed by a frameCounter (the first connection's only: the test dials
// once).
type teeListener struct {
	net.Listener
	counter *frameCounter
	once    sync.Once
}

func (l *teeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &teeConn{Conn: c}
	l.once.Do(func() {
		pr, pw := io.Pipe()
		tc.w = pw
		go l.counter.parse(pr)
	})
	return tc, nil
}

type teeConn struct {
	net.Conn
	w *io.PipeWriter
}

func (c *teeConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.w != nil {
		if _, werr := c.w.Write(b[:n]); werr != nil {
			c.w = nil
		}
	}
	return n, err
}

func (c *teeConn) Close() error {
	if c.w != nil {
		c.w.Close()
	}
	return c.Conn.Close()
}

// assigningDispatcher welcomes a session, sends it n assignment diffs,
// then acknowledges heartbeats.
type assigningDispatcher struct {
	shoalv1.UnimplementedDispatcherServer
	n int
}

func (d *assigningDispatcher) Session(s shoalv1.Dispatcher_SessionServer) error {
	if _, err := s.Recv(); err != nil {
		return err
	}
	if err := s.Send(&shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Welcome{Welcome: &shoalv1.SessionWelcome{HeartbeatPeriodMs: 20}}}); err != nil {
		return err
	}
	for i := range d.n {
		task := &shoalv1.Task{Meta: &shoalv1.Meta{Id: string(rune('a' + i))}, NodeId: "n1",
			Status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED}}
		if err := s.Send(&shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Assignments{Assignments: &shoalv1.Assignments{Upsert: []*shoalv1.Task{task}}}}); err != nil {
			return err
		}
	}
	for {
		m, err := s.Recv()
		if err != nil {
			return err
		}
		if m.GetHeartbeat() != nil {
			if err := s.Send(&shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_HeartbeatAck{HeartbeatAck: &shoalv1.Heartbeat{}}}); err != nil {
				return err
			}
		}
	}
}

// TestSessionSendsNoFlowControlPings: the messages a manager sends down a
// session cost it no PING to read and answer. With gRPC's dynamic window
// the agent pinged the manager (bandwidth-delay estimate) after nearly
// every message it received, which the manager answered with a write and
// a flush of its own: 5,000 sessions' worth of extra frames and syscalls.
func TestSessionSendsNoFlowControlPings(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	counter := &frameCounter{}
	srv := grpc.NewServer()
	const diffs = 5
	shoalv1.RegisterDispatcherServer(srv, &assigningDispatcher{n: diffs})
	go srv.Serve(&teeListener{Listener: ln, counter: counter})
	defer srv.Stop()

	ex := newFakeExecutor()
	a := New(Config{NodeID: "n1", Managers: []string{ln.Addr().String()}, Creds: insecure.NewCredentials(),
		Description: &shoalv1.NodeDescription{}, Executor: ex, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// Every diff received (a PING it triggered is queued before the diff
	// is handed over), then a DATA frame the agent sent after that (a
	// heartbeat): frames go out in the order queued, so any such PING has
	// been parsed by then.
	poll := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); {
			if time.Now().After(deadline) {
				t.Fatalf("after 10s: %s", what)
			}
			time.Sleep(5 * time.Millisecond) // poll interval, not synchronisation
		}
	}
	poll("the agent has not been given every diff", func() bool { return ex.assignCalls() >= diffs })
	d0, _, _ := counter.counts()
	poll("no DATA frame from the agent after the diffs", func() bool {
		d, _, err := counter.counts()
		if err != nil {
			t.Fatalf("parsing the agent's frames: %v", err)
		}
		return d > d0
	})
	if _, pings, _ := counter.counts(); pings != 0 {
		t.Fatalf("the agent sent %d PING frames for %d small messages received, want 0 (fixed flow-control window)", pings, diffs+1)
	}
}
