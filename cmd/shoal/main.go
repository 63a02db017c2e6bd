// Command shoal is every part of a shoal cluster: the node verbs (init,
// join, daemon, dev) and the client commands. See package cli.
//
// SHOAL_DEBUG_ADDR=127.0.0.1:6060 serves Go's net/http/pprof profiles on
// that address (meant for loopback; off by default). SHOAL_METRICS=1 keeps
// raft's and shoal's metrics in memory; SIGUSR1 dumps them to stderr.
//
// Unless GOGC is set, the garbage collector runs at 300% instead of 100%:
// a manager's heap is small (tens of MB) and at thousands of writes per
// second GC was an eighth of its CPU. A soft memory limit that follows the
// live heap (memlimit.go; unless GOMEMLIMIT is set) keeps a big heap from
// growing to four times what is live. `shoal bench schedule`, whose process
// runs the simulated agents, sets its own (cli's applyBenchGC), and the
// limit keeper yields to it.
package main

import (
	"context"
	"fmt"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	gometrics "github.com/armon/go-metrics"

	shoalruntime "github.com/shoal-dev/shoal/agent/runtime"
	"github.com/shoal-dev/shoal/cmd/shoal/cli"
)

func main() {
	// A container's init and a task's shim are this same binary re-executed:
	// they must take over before anything else runs.
	shoalruntime.MaybeInit()
	if os.Getenv("SHOAL_METRICS") != "" {
		inm := gometrics.NewInmemSink(10*time.Second, time.Minute)
		gometrics.NewInmemSignal(inm, syscall.SIGUSR1, os.Stderr)
		cfg := gometrics.DefaultConfig("shoal")
		cfg.EnableHostname = false
		gometrics.NewGlobal(cfg, inm)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(300)
	}
	adjustMemoryLimit(context.Background()) // memlimit.go
	if addr := os.Getenv("SHOAL_DEBUG_ADDR"); addr != "" {
		go func() {
			if err := http.ListenAndServe(addr, nil); err != nil {
				fmt.Fprintln(os.Stderr, "SHOAL_DEBUG_ADDR:", err)
			}
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
