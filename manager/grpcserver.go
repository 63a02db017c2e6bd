package manager

import (
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// defaultStreamWorkers is how many goroutines the manager's gRPC server
// keeps to run calls on (grpc.NumStreamWorkers). Without workers gRPC
// starts a fresh goroutine for every call, and at 256 concurrent writers
// growing each new goroutine's stack (runtime.newstack/copystack) was 5 %
// of the leader's CPU: a worker keeps its grown stack from call to call.
// Handlers block on raft for a whole commit, so a worker is busy for the
// call's whole round trip; when every worker is busy gRPC falls back to a
// fresh goroutine, so the count bounds only how many calls reuse a stack,
// never how many run. Long-lived streams (agent sessions, watches) hold a
// worker for their life. Workers are shared by all connections (unlike the
// per-connection buffers): 256 fresh workers hold 480 KiB of stack.
// The figure is from A/B runs of bench at 1/16/256 writers (see
// docs/performance.md, "API side, fourth round").
const defaultStreamWorkers = 256

// streamWorkers overrides defaultStreamWorkers at link time, for A/B
// builds only (go build -ldflags "-X
// github.com/shoal-dev/shoal/manager.streamWorkers=64"); "0" turns the
// workers off (a goroutine per call, gRPC's default).
var streamWorkers string

// serverWindow is the manager's fixed HTTP/2 flow-control window, per
// stream and per connection. What a peer can make the manager hold is the
// stream window: gRPC returns connection window as soon as a frame is read
// (whether or not a handler read it), and a stream's only as its handler
// reads. So a stream whose handler does not read (a session whose receiver
// waits on the status writer, an exec whose task does not read its stdin)
// holds up to 2 MiB, as a unary call's body of up to 4 MiB (gRPC's message
// limit) is held whatever the window.
const serverWindow = 2 << 20

// tuningOptions are the manager gRPC server's performance options, apart
// from credentials, interceptors and keepalives.
func tuningOptions() []grpc.ServerOption {
	n := defaultStreamWorkers
	if v, err := strconv.Atoi(streamWorkers); err == nil && v >= 0 {
		n = v
	}
	opts := []grpc.ServerOption{
		// No 32 KiB read buffer per connection (160 MB of the leader's
		// heap with 5,000 node sessions, most of them idle between
		// heartbeats): the framer reads from the TLS connection, which
		// already holds a whole record.
		grpc.ReadBufferSize(0),
		// gRPC's 32 KiB write buffer is kept (pooled: held between a
		// write and its flush). 16 KiB took ~70 MB off the leader's
		// heap at 5,000 sessions but its rate to RUNNING fell by a
		// quarter in two quiet pairs (docs/benchmarks-history.md,
		// "Scheduler at scale", fifth round).
		//
		// Fixed flow-control windows: with gRPC's dynamic (BDP) window
		// the server answers nearly every small message of a node
		// session or an API call with a PING and reads its
		// acknowledgement — a read and a write syscall per message each
		// way, most of the session traffic at 5,000 nodes
		// (TestServerSendsNoFlowControlPings). 2 MiB is below the 16 MiB
		// the dynamic window may grow to, so a peer may have no more
		// unread bytes in flight than before; the agents' side of the
		// session connection has the same fixed window.
		grpc.StaticStreamWindowSize(serverWindow),
		grpc.StaticConnWindowSize(serverWindow),
	}
	if n > 0 {
		opts = append(opts, grpc.NumStreamWorkers(uint32(n)))
	}
	return opts
}

// forwardDialOptions are the options of a follower's connection to the
// leader that it forwards calls on, apart from credentials: a forwarded
// reply may be a whole list (100,000 tasks are ~23 MB), above gRPC's
// default 4 MiB receive limit; and the same fixed windows as the server
// (without them the follower answers nearly every forwarded reply with a
// PING the leader acknowledges: TestForwardClientSendsNoFlowControlPings).
// And the client's reconnection back-off (100 ms growing to 1 s, not
// gRPC's 1 s growing to 2 min): a follower that forwarded to a manager
// while it was down (a leader just killed) must reach it again at once
// when, restarted, it wins the next election, not after a second of
// calls failing UNAVAILABLE (bench -failover: first writes after ~930 ms
// in 4 of 160 failovers).
func forwardDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second,
		}, MinConnectTimeout: 20 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxReplyBytes)),
		grpc.WithStaticStreamWindowSize(serverWindow),
		grpc.WithStaticConnWindowSize(serverWindow),
	}
}
