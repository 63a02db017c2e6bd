package gossip

import (
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The failure-detection benchmark: 50 members on loopback. 48 run in this
// process; one ("starved") runs in a child process (this test binary,
// re-executed) that the benchmark stops with SIGSTOP for a stall and then
// resumes — a process that gets no CPU at all for that long, the worst
// case of starvation (its sockets still queue packets, as on a loaded
// host). At the same time a healthy member is shut down for real. The
// benchmark reports:
//   - detect_ms: from the real death to every surviving in-process member
//     seeing it dead (max over observers);
//   - first_ms: to the first observer seeing it dead;
//   - starved_fp: observers that declared the starved member dead (false
//     positives: it is alive, only slow), summed over iterations;
//
// for memberlist's LAN defaults and for candidate tunings, with stalls of
// 2 s (a long GC or CPU-quota pause) and 5 s (a badly overloaded host).

const childEnv = "SHOAL_GOSSIP_BENCH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		runChild()
		return
	}
	os.Exit(m.Run())
}

// runChild runs one member until killed; it prints its address first.
func runChild() {
	key, _ := hex.DecodeString(os.Getenv(childEnv + "_KEY"))
	tun := tunings[os.Getenv(childEnv+"_TUNING")]
	n, err := New(Config{NodeID: "starved", BindAddr: "127.0.0.1", AdvertiseAddr: "127.0.0.1", Port: -1, Keys: [][]byte{key}, Tuning: tun})
	if err == nil {
		err = n.Start()
	}
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	if _, err := n.Join([]string{os.Getenv(childEnv + "_JOIN")}); err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println("ADDR", n.Addr())
	select {}
}

var tunings = map[string]Tuning{
	// memberlist.DefaultLANConfig as is.
	"lan": {ProbeInterval: time.Second, ProbeTimeout: 500 * time.Millisecond, GossipInterval: 200 * time.Millisecond,
		SuspicionMult: 4, SuspicionMaxMult: 6, IndirectChecks: 3, PushPullInterval: 30 * time.Second, TCPTimeout: 10 * time.Second, AwarenessMaxMult: 8},
	// Faster probing, shorter suspicion.
	"fast": {ProbeInterval: 500 * time.Millisecond, ProbeTimeout: 250 * time.Millisecond, GossipInterval: 100 * time.Millisecond,
		SuspicionMult: 3, SuspicionMaxMult: 4, IndirectChecks: 3, PushPullInterval: 30 * time.Second, TCPTimeout: 5 * time.Second, AwarenessMaxMult: 8},
	// Shoal's DefaultTuning.
	"shoal": DefaultTuning,
}

func BenchmarkFailureDetection(b *testing.B) {
	for _, name := range []string{"lan", "fast", "shoal"} {
		for _, stall := range []time.Duration{2 * time.Second, 5 * time.Second} {
			b.Run(fmt.Sprintf("%s/stall=%s", name, stall), func(b *testing.B) {
				var detect, first time.Duration
				fp := 0
				for i := 0; i < b.N; i++ {
					d, f, p := detectOnce(b, name, stall)
					detect += d
					first += f
					fp += p
				}
				b.ReportMetric(float64(detect.Milliseconds())/float64(b.N), "detect_ms")
				b.ReportMetric(float64(first.Milliseconds())/float64(b.N), "first_ms")
				b.ReportMetric(float64(fp), "starved_fp")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

func detectOnce(b *testing.B, tuning string, stall time.Duration) (detect, first time.Duration, falsePos int) {
	b.Helper()
	const members = 50
	k := key(b)
	tun := tunings[tuning]
	var mu sync.Mutex
	deadAt := map[string]time.Time{} // observer → when it saw the victim dead
	starvedDead := map[string]bool{}
	var nodes []*Node
	for i := 0; i < members-1; i++ {
		id := fmt.Sprintf("m%02d", i)
		n, err := New(Config{NodeID: id, BindAddr: "127.0.0.1", AdvertiseAddr: "127.0.0.1", Port: -1, Keys: [][]byte{k}, Tuning: tun,
			OnEvent: func(e Event) {
				if e.Member.State != StateDead {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				switch e.Member.NodeID {
				case "m01":
					if _, ok := deadAt[id]; !ok {
						deadAt[id] = time.Now()
					}
				case "starved":
					starvedDead[id] = true
				}
			}})
		if err != nil {
			b.Fatal(err)
		}
		if err := n.Start(); err != nil {
			b.Fatal(err)
		}
		defer n.Shutdown()
		if i > 0 {
			if _, err := n.Join([]string{nodes[0].Addr()}); err != nil {
				b.Fatal(err)
			}
		}
		nodes = append(nodes, n)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", childEnv+"_KEY="+hex.EncodeToString(k),
		childEnv+"_TUNING="+tuning, childEnv+"_JOIN="+nodes[0].Addr())
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		cmd.Wait()
	}()
	buf := make([]byte, 256)
	nr, _ := out.Read(buf)
	if !strings.HasPrefix(string(buf[:nr]), "ADDR") {
		b.Fatalf("child: %q", buf[:nr])
	}
	waitForD(b, 2*time.Minute, "50 members alive everywhere", func() bool {
		for _, n := range nodes {
			if n.NumAlive() != members {
				return false
			}
		}
		return true
	})

	// Stall the starved member and kill m01 at the same moment.
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		b.Fatal(err)
	}
	killed := time.Now()
	nodes[1].Shutdown()
	stallEnd := killed.Add(stall)
	observers := append(append([]*Node{}, nodes[:1]...), nodes[2:]...)
	deadline := time.Now().Add(2 * time.Minute)
	resumed := false
	for {
		now := time.Now()
		if !resumed && now.After(stallEnd) {
			cmd.Process.Signal(syscall.SIGCONT)
			resumed = true
		}
		mu.Lock()
		all := len(deadAt) == len(observers)
		mu.Unlock()
		if all && resumed {
			break
		}
		if now.After(deadline) {
			b.Fatalf("m01 not seen dead by all within 2 min (%d/%d)", len(deadAt), len(observers))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Let the resumed member refute suspicion before counting, then
	// count observers that declared it dead at any point.
	waitForD(b, 2*time.Minute, "starved member alive again everywhere", func() bool {
		for _, n := range observers {
			if s, _ := n.State("starved"); s != StateAlive {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	for _, t := range deadAt {
		d := t.Sub(killed)
		if d > detect {
			detect = d
		}
		if first == 0 || d < first {
			first = d
		}
	}
	return detect, first, len(starvedDead)
}
