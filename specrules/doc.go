// Package specrules owns every rule a service, task or node spec must
// follow. The managers' Control API checks a spec with it before anything
// is stored, and the agent checks the task it is given with the same rules
// (plus the ones only a node can judge, such as "a bind source is never
// inside this node's data dir") before it builds a container from it: the
// two sides cannot disagree on what a valid spec is, and the agent never
// silently changes a spec it cannot run, it refuses it.
//
// Besides the checks it holds the tables and defaults both sides use: the
// stop signals by name ([ParseSignal]), the default stop grace period, the
// smallest memory limit a container starts with, the CPU range that fits a
// CFS quota, and the format of a task id.
//
// Every problem is reported at once, each with its field path
// ("spec.task.container.env[3]") and the reason; see [Problems]. A field
// path is formatted only for a problem. [ServiceUpdate] checks a service
// without its task when the caller knows these rules accepted that very
// task (the Control API's update that leaves the task as it stored it).
// [AgentHello] bounds what an agent says of its node when its session opens
// (hostname, platform, engine version, addresses), which the dispatcher
// writes into the node object.
//
// Job modes (jobs.go): completions and concurrency, the cron schedule
// ([ParseSchedule], robfig/cron's parser, evaluated in UTC) and its
// concurrency policy, and the restart back-off cap.
//
// It imports only proto/, go-containerregistry's name package, robfig/cron
// and the standard library, and compiles no regular expression of its own at
// package init:
// every shoal process (shims and container inits included) links it.
package specrules
