// Command shoal-init is the tiny init a task with --init runs as PID 1:
// see package agent/runtime/tinyinit. Build it static and put it beside
// the shoal binary (make build does):
//
//	CGO_ENABLED=0 go build -o bin/shoal-init ./cmd/shoal-init
package main

import (
	"os"

	"github.com/shoal-dev/shoal/agent/runtime/tinyinit"
)

func main() { os.Exit(tinyinit.Main(os.Args[1:])) }
