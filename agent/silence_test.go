package agent

import (
	"context"
	"log/slog"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestSilenceLimitCoversDownThreshold: the agent gives up on a silent
// manager no sooner than the manager's default down threshold (4 periods;
// 3 periods dropped every session of a leader stalled for 1.5 s).
func TestSilenceLimitCoversDownThreshold(t *testing.T) {
	const managerDownAfterMissed = 4 // dispatcher.DefaultDownAfterMissed
	for _, period := range []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second} {
		if got, min := silenceLimit(period), managerDownAfterMissed*period; got < min {
			t.Errorf("period %s: silence limit %s, want at least %s", period, got, min)
		}
	}
}

// TestHeartbeatSaysHowLongTheManagerWasSilent: with no acknowledgement
// the heartbeat loop ends with the silence limit in its error.
func TestHeartbeatSaysHowLongTheManagerWasSilent(t *testing.T) {
	a := &Agent{}
	period := 5 * time.Millisecond
	err := a.heartbeat(context.Background(), func(*shoalv1.AgentMessage) error { return nil }, period, make(chan struct{}), nil, nil)
	if err == nil || !strings.Contains(err.Error(), silenceLimit(period).String()) {
		t.Fatalf("heartbeat: %v, want manager silent for %s", err, silenceLimit(period))
	}
}

// TestOpenDeadlineExtends: an attempt is given openTimeout, then
// connectedTimeout once the manager's host accepted the connection, then
// welcomeTimeout once the manager answered; never shortened, and not
// revived once passed.
func TestOpenDeadlineExtends(t *testing.T) {
	cancelled := make(chan struct{})
	d := newOpenDeadline(func() { close(cancelled) })
	d.extend(connectedTimeout) // the dialer may connect before start
	d.start()
	if lim, fired := d.expired(); fired || lim != connectedTimeout {
		t.Fatalf("after connecting: limit %s (fired %v), want %s", lim, fired, connectedTimeout)
	}
	d.extend(openTimeout) // shorter: ignored
	d.extend(welcomeTimeout)
	if lim, _ := d.expired(); lim != welcomeTimeout {
		t.Fatalf("after the answer: limit %s, want %s", lim, welcomeTimeout)
	}
	if !d.stop() {
		t.Fatal("stop: the deadline had passed")
	}
	select {
	case <-cancelled:
		t.Fatal("a stopped deadline cancelled the attempt")
	default:
	}

	// A deadline that passes cancels the attempt and stays passed.
	cancelled2 := make(chan struct{})
	d2 := newOpenDeadline(func() { close(cancelled2) })
	d2.limit = time.Millisecond
	d2.start()
	<-cancelled2
	d2.extend(welcomeTimeout)
	if lim, fired := d2.expired(); !fired || lim != time.Millisecond {
		t.Fatalf("passed deadline: limit %s fired %v, want 1ms and fired", lim, fired)
	}
	if d2.stop() {
		t.Fatal("stop reported a passed deadline as in time")
	}
}

// TestHeartbeatFollowsManagersPeriod: a period the manager sends on an
// open session (the cluster grew, or its heartbeat_period_ms setting changed) replaces the
// welcome's for the heartbeats and for the silence limit.
func TestHeartbeatFollowsManagersPeriod(t *testing.T) {
	a := &Agent{log: slog.New(slog.DiscardHandler)}
	periods := make(chan time.Duration, 1)
	sent := make(chan struct{}, 100)
	done := make(chan error, 1)
	go func() {
		done <- a.heartbeat(context.Background(), func(*shoalv1.AgentMessage) error {
			select {
			case sent <- struct{}{}:
			default:
			}
			return nil
		}, time.Hour, make(chan struct{}), periods, nil)
	}()
	const p = 5 * time.Millisecond
	periods <- p
	select {
	case <-sent:
	case <-time.After(10 * time.Second):
		t.Fatal("no heartbeat at the manager's new period (the welcome's hour still holds)")
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), silenceLimit(p).String()) {
			t.Fatalf("heartbeat: %v, want manager silent for %s", err, silenceLimit(p))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the silence limit did not follow the new period")
	}
}

// TestHeartbeatNamesItsPeriod: each heartbeat says the period the agent
// heartbeats at, the welcome's and then the manager's new one, so the
// manager judges the node by a shorter period only once it is in use.
func TestHeartbeatNamesItsPeriod(t *testing.T) {
	a := &Agent{log: slog.New(slog.DiscardHandler)}
	periods := make(chan time.Duration, 1)
	named := make(chan int64, 100)
	ack := make(chan struct{}, 1) // every heartbeat acknowledged: the manager never falls silent
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- a.heartbeat(ctx, func(m *shoalv1.AgentMessage) error {
			select {
			case named <- m.GetHeartbeat().GetHeartbeatPeriodMs():
			default:
			}
			select {
			case ack <- struct{}{}:
			default:
			}
			return nil
		}, 40*time.Millisecond, ack, periods, nil)
	}()
	defer func() { cancel(); <-done }()
	next := func() int64 {
		t.Helper()
		select {
		case ms := <-named:
			return ms
		case err := <-done:
			t.Fatalf("heartbeat ended: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no heartbeat")
		}
		return 0
	}
	if ms := next(); ms != 40 {
		t.Fatalf("heartbeat names %d ms, want the welcome's 40", ms)
	}
	periods <- 60 * time.Millisecond
	deadline := time.Now().Add(10 * time.Second)
	for next() != 60 {
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat names the manager's new period 60 ms")
		}
	}
}

// TestHeartbeatSkippedWhileTrafficFlows: a period in which the agent sent
// a status and heard from the manager sends no heartbeat; once the
// session is quiet, or the manager stops answering while statuses still
// go out, the heartbeats come back (and the silence limit still holds).
func TestHeartbeatSkippedWhileTrafficFlows(t *testing.T) {
	a := &Agent{log: slog.New(slog.DiscardHandler)}
	const period = 100 * time.Millisecond
	var beats atomic.Int64
	var sent atomic.Int64
	ack := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- a.heartbeat(ctx, func(*shoalv1.AgentMessage) error { beats.Add(1); return nil }, period, ack, nil, &sent)
	}()
	defer func() { cancel(); <-done }()

	// Traffic both ways, far more often than the period, for 20 periods.
	start := time.Now()
	for time.Since(start) < 20*period {
		sent.Store(time.Now().UnixNano())
		select {
		case ack <- struct{}{}:
		default:
		}
		time.Sleep(period / 25) // the traffic's pace, not a synchronisation
	}
	// Without the skip every tick heartbeats (~20); a starved feeder may
	// let one or two through.
	if n := beats.Load(); n > 5 {
		t.Fatalf("%d heartbeats in 20 periods of traffic both ways, want (nearly) none", n)
	}

	// Statuses still go out but the manager says nothing: heartbeats come
	// back (they are what the manager would answer).
	before := beats.Load()
	deadline := time.Now().Add(10 * time.Second)
	for beats.Load() == before {
		sent.Store(time.Now().UnixNano())
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat while the manager was silent")
		}
		time.Sleep(period / 25)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "manager silent") {
			t.Fatalf("heartbeat: %v, want manager silent", err)
		}
		done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("the silence limit did not hold while only statuses went out")
	}
}

// TestHeartbeatWait: a heartbeat is skipped only while the manager spoke
// and the agent's last message went out less than a period ago, and is
// then due a period after that message, so the node is never silent for
// longer than a period. Skipping whole ticks let a status sent just after
// a tick be followed by the heartbeat two ticks later: nearly two periods
// of silence, the whole limit when node_down_after_missed is 2, and
// gossip's fast path (DOWN after two silent periods) with a stale view.
func TestHeartbeatWait(t *testing.T) {
	const p = time.Second
	never := time.Duration(math.MaxInt64)
	for _, tt := range []struct {
		name  string
		since time.Duration
		heard bool
		want  time.Duration
	}{
		{"quiet session", never, true, 0},
		{"status but the manager silent", 10 * time.Millisecond, false, 0},
		{"status just now, manager spoke", 0, true, p},
		{"status just after the last decision", 10 * time.Millisecond, true, p - 10*time.Millisecond},
		{"status nearly a period ago", 990 * time.Millisecond, true, 10 * time.Millisecond},
		{"status a period ago", p, true, 0},
		{"wall clock went back", -time.Second, true, 0},
	} {
		if got := heartbeatWait(tt.since, tt.heard, p); got != tt.want {
			t.Errorf("%s: wait %s, want %s", tt.name, got, tt.want)
		}
		if got := heartbeatWait(tt.since, tt.heard, p); got > p {
			t.Errorf("%s: wait %s longer than a period", tt.name, got)
		}
	}
}

// TestHeartbeatNamesChangedPeriodWhileTrafficFlows: a period the manager
// changes is named in a heartbeat even while traffic flows both ways (the
// manager judges the node by a shorter period only once a heartbeat
// names it; with every heartbeat skipped it never learned it while the
// node was busy), and skipping resumes after it.
func TestHeartbeatNamesChangedPeriodWhileTrafficFlows(t *testing.T) {
	a := &Agent{log: slog.New(slog.DiscardHandler)}
	var sent atomic.Int64
	var named atomic.Int64 // the period the last heartbeat named, ms
	var beats atomic.Int64
	ack := make(chan struct{}, 1)
	periods := make(chan time.Duration, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- a.heartbeat(ctx, func(m *shoalv1.AgentMessage) error {
			beats.Add(1)
			named.Store(m.GetHeartbeat().GetHeartbeatPeriodMs())
			return nil
		}, 200*time.Millisecond, ack, periods, &sent)
	}()
	defer func() { cancel(); <-done }()
	stop := make(chan struct{})
	traffic := make(chan struct{})
	go func() { // statuses out and messages in, far more often than a period
		defer close(traffic)
		for {
			sent.Store(time.Now().UnixNano())
			select {
			case ack <- struct{}{}:
			default:
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond): // the traffic's pace
			}
		}
	}()
	defer func() { close(stop); <-traffic }()
	const shorter = 100 * time.Millisecond
	periods <- shorter
	deadline := time.Now().Add(10 * time.Second)
	for named.Load() != shorter.Milliseconds() {
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeat named the new period %s while traffic flowed (last named %d ms)", shorter, named.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Once named, skipping resumes: far fewer heartbeats than periods.
	before := beats.Load()
	start := time.Now()
	for time.Since(start) < 20*shorter {
		time.Sleep(shorter)
	}
	if n := beats.Load() - before; n > 5 {
		t.Fatalf("%d heartbeats in 20 periods of traffic after the period was named, want (nearly) none", n)
	}
}
