// Package health runs a task's health check on the agent: exec probes
// inside the container, HTTP and TCP probes dialled from inside the
// task's network namespace (through netnsrun), on an interval, each
// bounded by a timeout, with a start period and a number of retries.
//
// # Pieces
//
//   - [Resolve] turns the service's HealthCheck and the image's own
//     HEALTHCHECK into the [Check] to run (or none: type "none", or no
//     check anywhere). The spec's timings override the image's; zero
//     means the image's, then the defaults (30 s, 30 s, 3 retries, no
//     start period).
//   - [Machine] is the pure state machine: probe results in, the task's
//     health (STARTING → HEALTHY ⇄ failing → UNHEALTHY) out, and whether
//     that is news worth a status update. Failures within the start
//     period do not count; a success there makes the task healthy at
//     once. Only a change of health or of the failing streak is news, so
//     a steady healthy task sends nothing and 10,000 of them do not flood
//     raft; the last probe's output (at most [MaxOutput] bytes) travels
//     with the next update.
//   - [Run] is the loop one goroutine per running task owns: it waits,
//     probes with a deadline, feeds the machine and hands news to its
//     caller; it ends when the task is unhealthy or ctx ends. While a
//     task is starting within its start period it probes at most every
//     second (so a task is healthy soon after it is ready), otherwise
//     every interval.
//   - [ExecProbe], [HTTPProbe] and [TCPProbe] are the probes. An exec
//     probe runs through an [Execer] (the runtime), which kills the probe
//     and what it started at the deadline.
//
// The executor (package agent) starts Run while it supervises a RUNNING
// task, reports each news as a RUNNING status with TaskStatus.health and
// friends, and stops an UNHEALTHY task, reporting it FAILED with the error
// "unhealthy: <last output>" so that the restart policy replaces it.
package health
