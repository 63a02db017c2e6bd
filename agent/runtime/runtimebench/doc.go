// Package runtimebench measures a container's whole lifecycle (create →
// start → exit → clean-up of /bin/true) through shoal's runtime against
// the runc CLI, for `shoal debug runtime-bench` (make bench-runtime).
//
// It lives outside agent/runtime because it is a benchmark, not part of
// the runtime, and outside the bench/ module because it must be built into
// the shoal binary: the runtime's shim is /proc/self/exe, so only from
// that binary does the figure include the real shim and container init.
package runtimebench
