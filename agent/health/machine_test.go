package health

import (
	"context"
	"strings"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

const (
	starting  = shoalv1.TaskHealth_TASK_HEALTH_STARTING
	healthy   = shoalv1.TaskHealth_TASK_HEALTH_HEALTHY
	unhealthy = shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY
)

func TestMachine(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type step struct {
		at     time.Duration // since the container started
		ok     bool
		health shoalv1.TaskHealth
		streak int64
		news   bool
	}
	tests := []struct {
		name  string
		check Check
		prev  Status
		steps []step
	}{
		{name: "healthy at the first success, then quiet",
			check: Check{Interval: time.Second, Retries: 3},
			steps: []step{{1 * time.Second, true, healthy, 0, true}, {2 * time.Second, true, healthy, 0, false}, {3 * time.Second, true, healthy, 0, false}}},
		{name: "retries failures in a row make it unhealthy, each one news",
			check: Check{Interval: time.Second, Retries: 3},
			steps: []step{{1 * time.Second, true, healthy, 0, true}, {2 * time.Second, false, healthy, 1, true},
				{3 * time.Second, false, healthy, 2, true}, {4 * time.Second, false, unhealthy, 3, true}}},
		{name: "a success ends the streak",
			check: Check{Interval: time.Second, Retries: 3},
			steps: []step{{1 * time.Second, false, starting, 1, true}, {2 * time.Second, false, starting, 2, true},
				{3 * time.Second, true, healthy, 0, true}, {4 * time.Second, false, healthy, 1, true}}},
		{name: "failures within the start period do not count",
			check: Check{Interval: time.Second, Retries: 1, StartPeriod: 10 * time.Second},
			steps: []step{{1 * time.Second, false, starting, 0, false}, {9 * time.Second, false, starting, 0, false},
				{11 * time.Second, false, unhealthy, 1, true}}},
		{name: "a success within the start period is healthy; later failures count",
			check: Check{Interval: time.Second, Retries: 1, StartPeriod: 10 * time.Second},
			steps: []step{{1 * time.Second, true, healthy, 0, true}, {2 * time.Second, false, unhealthy, 1, true}}},
		{name: "retries 0 is at least one",
			check: Check{Interval: time.Second},
			steps: []step{{1 * time.Second, false, unhealthy, 1, true}}},
		{name: "re-adopted healthy stays healthy",
			check: Check{Interval: time.Second, Retries: 2, StartPeriod: time.Hour},
			prev:  Status{Health: healthy},
			steps: []step{{1 * time.Second, true, healthy, 0, false}, {2 * time.Second, false, healthy, 1, true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMachine(tc.check, t0, tc.prev)
			for i, s := range tc.steps {
				st, news := m.Observe(t0.Add(s.at), Result{OK: s.ok, Output: "out"})
				if st.Health != s.health || st.FailingStreak != s.streak || news != s.news {
					t.Fatalf("step %d: got %v streak %d news %v, want %v %d %v", i, st.Health, st.FailingStreak, news, s.health, s.streak, s.news)
				}
				if !st.CheckedAt.Equal(t0.Add(s.at)) || st.Output != "out" {
					t.Fatalf("step %d: checked at %v output %q", i, st.CheckedAt, st.Output)
				}
			}
		})
	}
}

func TestMachineNext(t *testing.T) {
	t0 := time.Unix(1000, 0)
	m := NewMachine(Check{Interval: 30 * time.Second, StartPeriod: 10 * time.Second, Retries: 3}, t0, Status{})
	if d := m.Next(t0); d != StartInterval {
		t.Errorf("within the start period: %v, want %v", d, StartInterval)
	}
	if d := m.Next(t0.Add(11 * time.Second)); d != 30*time.Second {
		t.Errorf("after the start period: %v", d)
	}
	m.Observe(t0.Add(time.Second), Result{OK: true})
	if d := m.Next(t0.Add(2 * time.Second)); d != 30*time.Second {
		t.Errorf("healthy within the start period: %v", d)
	}
	fast := NewMachine(Check{Interval: 100 * time.Millisecond, StartPeriod: time.Minute}, t0, Status{})
	if d := fast.Next(t0); d != 100*time.Millisecond {
		t.Errorf("an interval below StartInterval: %v", d)
	}
}

// fakeClock fires every After at once, moving its time on by the delay;
// Run is one goroutine, so nothing races.
type fakeClock struct {
	now   time.Time
	waits []time.Duration
}

func (c *fakeClock) Now() time.Time { return c.now }
func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.waits = append(c.waits, d)
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

func TestRunUntilUnhealthy(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	results := []Result{{OK: true, Output: "fine"}, {OK: true}, {Output: "bad 1"}, {Output: "bad 2"}}
	probes := 0
	p := ProbeFunc(func(ctx context.Context) Result {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("a probe without a deadline")
		}
		r := results[probes]
		probes++
		return r
	})
	var news []Status
	m := NewMachine(Check{Interval: 5 * time.Second, Timeout: time.Second, Retries: 2}, clk.now, Status{})
	if err := Run(context.Background(), m, p, clk, func(s Status) { news = append(news, s) }); err != nil {
		t.Fatal(err)
	}
	if probes != 4 {
		t.Fatalf("%d probes, want 4 (it must stop once unhealthy)", probes)
	}
	want := []struct {
		h      shoalv1.TaskHealth
		streak int64
		out    string
	}{{healthy, 0, "fine"}, {healthy, 1, "bad 1"}, {unhealthy, 2, "bad 2"}}
	if len(news) != len(want) {
		t.Fatalf("news %+v", news)
	}
	for i, w := range want {
		if news[i].Health != w.h || news[i].FailingStreak != w.streak || news[i].Output != w.out {
			t.Errorf("news %d: %+v, want %+v", i, news[i], w)
		}
	}
	for _, d := range clk.waits {
		if d != 5*time.Second {
			t.Errorf("waited %v between probes, want the interval", d)
		}
	}
}

func TestRunTimeout(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	// The probe blocks until its deadline, as a hung one would.
	p := ProbeFunc(func(ctx context.Context) Result {
		<-ctx.Done()
		return Result{Output: "partial"}
	})
	var news []Status
	m := NewMachine(Check{Interval: time.Second, Timeout: 20 * time.Millisecond, Retries: 1}, clk.now, Status{})
	if err := Run(context.Background(), m, p, clk, func(s Status) { news = append(news, s) }); err != nil {
		t.Fatal(err)
	}
	if len(news) != 1 || news[0].Health != unhealthy || !strings.Contains(news[0].Output, "timed out after 20ms: partial") {
		t.Fatalf("news %+v", news)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	clk := &fakeClock{now: time.Unix(1000, 0)}
	probes := 0
	p := ProbeFunc(func(context.Context) Result {
		probes++
		if probes == 2 {
			cancel() // the task is being stopped while a probe runs
			return Result{Output: "connection refused"}
		}
		return Result{OK: true}
	})
	var news []Status
	m := NewMachine(Check{Interval: time.Second, Timeout: time.Second, Retries: 1}, clk.now, Status{})
	if err := Run(ctx, m, p, clk, func(s Status) { news = append(news, s) }); err != context.Canceled {
		t.Fatalf("err %v", err)
	}
	if len(news) != 1 || news[0].Health != healthy {
		t.Fatalf("a failure while stopping must not be news: %+v", news)
	}
}
