// Package runtimebench measures a container's whole lifecycle (create →
// start → exit → clean-up of /bin/true) through shoal's runtime against
// the runc CLI, for `shoal debug runtime-bench` (make bench-runtime).
//
// It lives outside agent/runtime because it is a benchmark, not part of
// the runtime, and outside the bench/ module because it is built into the
// shoal binary: it then runs as the agent does, with the shim (and
// container init, and supervisor) that `make build` puts beside it,
// bin/shoal-shim.
package runtimebench
