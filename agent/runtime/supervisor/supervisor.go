// Package supervisor is the C task supervisor that a shim turns into once
// its container runs (supervise_linux.c): a constructor that takes over
// the process when argv[1] is Verb, before the Go runtime starts, so that
// what stays alive for a task's whole life is a few pages of C rather than
// a Go process (about 0.2 MiB PSS instead of 3.5 MiB). It copies the
// container's output into the log file in log.go's format, waits, and
// records the exit; see agent/runtime/doc.go.
//
// Only cmd/shoal-shim imports it (for the constructor). It needs cgo.
package supervisor

import "C"

// Verb is argv[1] of a shim that execs itself into the supervisor
// (agent/runtime keeps its own copy: it must not import this package).
const Verb = "__shoal-supervise"
