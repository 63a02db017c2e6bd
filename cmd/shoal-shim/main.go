// Command shoal-shim is a task's shim and its container's init: the
// runtime (agent/runtime) starts it for each task, and libcontainer
// re-executes it as `runc init` inside the new container. It is also the
// exec helper of `task exec` and health-check probes (argv
// "runtime-exec"): it joins the container, so that the exec'd process's
// init is this binary too. It is a binary
// of its own, not the shoal binary re-executed, because both roles pay
// for the start-up of whatever binary they are: this one holds the runtime
// and libcontainer only (a fifth of shoal's size, a third of its package
// initialisers, no protobuf or gRPC). Once its container runs, the shim
// replaces itself (execve, same pid) with the C supervisor linked into
// this binary (agent/runtime/supervisor), which takes over before Go
// starts.
//
// It needs cgo and the seccomp tag; `make build` puts it beside bin/shoal,
// where the runtime looks for it (then in PATH):
//
//	go build -tags seccomp -o bin/shoal-shim ./cmd/shoal-shim
package main

import (
	"os"

	"github.com/shoal-dev/shoal/agent/runtime"
	// The C supervisor's constructor.
	_ "github.com/shoal-dev/shoal/agent/runtime/supervisor"
)

func main() { os.Exit(runtime.ShimMain(os.Args)) }
