package orchestrator

import (
	"fmt"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func job(completions, maxConcurrent int64) svcOpt {
	return func(s *shoalv1.Service) {
		s.Spec.Mode, s.Spec.Replicas = shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB, 0
		s.Spec.Job = &shoalv1.JobConfig{Completions: completions, MaxConcurrent: maxConcurrent}
		s.Spec.Task.Restart = &shoalv1.RestartPolicy{Condition: shoalv1.RestartCondition_RESTART_CONDITION_ON_FAILURE}
	}
}
func globalJob() svcOpt {
	return func(s *shoalv1.Service) {
		s.Spec.Mode, s.Spec.Replicas = shoalv1.ServiceMode_SERVICE_MODE_GLOBAL_JOB, 0
		s.Spec.Job = &shoalv1.JobConfig{}
		s.Spec.Task.Restart = &shoalv1.RestartPolicy{Condition: shoalv1.RestartCondition_RESTART_CONDITION_ON_FAILURE}
	}
}
func iteration(n uint64) svcOpt {
	return func(s *shoalv1.Service) { s.JobStatus = &shoalv1.JobStatus{Iteration: n} }
}
func schedule(expr, policy string) svcOpt {
	return func(s *shoalv1.Service) { s.Spec.Job.Schedule, s.Spec.Job.ConcurrencyPolicy = expr, policy }
}
func jobRestart(c shoalv1.RestartCondition, delay time.Duration) svcOpt {
	return func(s *shoalv1.Service) {
		s.Spec.Task.Restart = &shoalv1.RestartPolicy{Condition: c, DelayMs: delay.Milliseconds()}
	}
}
func inRun(n uint64) taskOpt { return func(t *shoalv1.Task) { t.JobIteration = n } }

func TestReconcileReplicatedJob(t *testing.T) {
	done := func(id string, slot uint64, run uint64) *shoalv1.Task {
		return mkTask(id, "j", slot, inRun(run), ended(tsComplete, ago(time.Minute)))
	}
	running := func(id string, slot uint64, run uint64) *shoalv1.Task { return mkTask(id, "j", slot, inRun(run)) }
	failed := func(id string, slot uint64, run uint64, at time.Duration) *shoalv1.Task {
		return mkTask(id, "j", slot, inRun(run), created(ago(at+time.Second)), ended(tsFailed, ago(at)))
	}
	for _, tc := range []struct {
		name  string
		svc   *shoalv1.Service
		tasks []*shoalv1.Task
		want  string
		// progress
		completed, waiting, failedSlots int
	}{
		{"3 completions: all start", mkService("j", 0, job(3, 0), iteration(1)), nil, "+1@1 +2@1 +3@1", 0, 0, 0},
		{"default: one completion", mkService("j", 0, job(0, 0), iteration(1)), nil, "+1@1", 0, 0, 0},
		{"max concurrent 2 of 5", mkService("j", 0, job(5, 2), iteration(1)), nil, "+1@1 +2@1", 0, 3, 0},
		{"max concurrent: a completion makes room for one", mkService("j", 0, job(5, 2), iteration(1)),
			[]*shoalv1.Task{done("a", 1, 1), running("b", 2, 1)}, "+3@1", 1, 2, 0},
		{"all complete: nothing restarted", mkService("j", 0, job(3, 0), iteration(1)),
			[]*shoalv1.Task{done("a", 1, 1), done("b", 2, 1), done("c", 3, 1)}, "", 3, 0, 0},
		{"complete not restarted even with condition any", mkService("j", 0, job(1, 0), iteration(1), jobRestart(condAny, 0)),
			[]*shoalv1.Task{done("a", 1, 1)}, "", 1, 0, 0},
		{"a failure is retried", mkService("j", 0, job(2, 0), iteration(1)),
			[]*shoalv1.Task{done("a", 1, 1), failed("b", 2, 1, time.Minute)}, "+2@1", 1, 0, 0},
		{"a failure waits for the restart delay", mkService("j", 0, job(1, 0), iteration(1), jobRestart(condOnFailure, 10*time.Second)),
			[]*shoalv1.Task{failed("a", 1, 1, time.Second)}, "retry=9s", 0, 1, 0},
		{"condition none: a failure is final", mkService("j", 0, job(2, 0), iteration(1), jobRestart(condNone, 0)),
			[]*shoalv1.Task{done("a", 1, 1), failed("b", 2, 1, time.Minute)}, "", 1, 0, 1},
		{"a new run starts afresh", mkService("j", 0, job(2, 0), iteration(2)),
			[]*shoalv1.Task{done("a", 1, 1), done("b", 2, 1)}, "+1@1 +2@1", 0, 0, 0},
		{"a new run stops the old run's live tasks", mkService("j", 0, job(1, 0), iteration(2)),
			[]*shoalv1.Task{running("a", 1, 1)}, "+1@1 ~a:shutdown/running", 0, 0, 0},
		{"allow: the old run's tasks run on", mkService("j", 0, job(1, 0), iteration(2), schedule("@hourly", "allow")),
			[]*shoalv1.Task{running("a", 1, 1)}, "+1@1", 0, 0, 0},
		{"replace: the old run's tasks are stopped", mkService("j", 0, job(1, 0), iteration(2), schedule("@hourly", "replace")),
			[]*shoalv1.Task{running("a", 1, 1)}, "+1@1 ~a:shutdown/running", 0, 0, 0},
		{"cron not fired yet: nothing", mkService("j", 0, job(2, 0), schedule("@hourly", "")), nil, "", 0, 0, 0},
		{"completions lowered: the extra slot stops", mkService("j", 0, job(1, 0), iteration(1)),
			[]*shoalv1.Task{done("a", 1, 1), running("b", 2, 1)}, "~b:shutdown/running", 1, 0, 0},
		{"two live tasks in a slot: the further one kept", mkService("j", 0, job(1, 0), iteration(1)),
			[]*shoalv1.Task{running("a", 1, 1), mkTask("b", "j", 1, inRun(1), st(tsAssigned))}, "~b:shutdown/assigned", 0, 0, 0},
	} {
		p, prog := reconcileReplicatedJob(tc.svc, tc.tasks, t0, nil)
		if got := describe(p); got != tc.want {
			t.Errorf("%s: plan %q, want %q", tc.name, got, tc.want)
		}
		for _, c := range p.Create {
			if c.GetJobIteration() != jobIteration(tc.svc) {
				t.Errorf("%s: task created for run %d, want %d", tc.name, c.GetJobIteration(), jobIteration(tc.svc))
			}
		}
		if prog.completed != tc.completed || prog.waiting != tc.waiting || prog.failed != tc.failedSlots {
			t.Errorf("%s: progress %+v, want completed %d waiting %d failed %d", tc.name, prog, tc.completed, tc.waiting, tc.failedSlots)
		}
	}
}

// A run's completions are never reaped, however much older history its
// slot has.
func TestJobHistoryKeepsTheRunsCompletion(t *testing.T) {
	svc := mkService("j", 0, job(1, 0), iteration(9))
	var tasks []*shoalv1.Task
	for i := range 8 {
		tasks = append(tasks, mkTask(fmt.Sprintf("r%d", i+1), "j", 1, inRun(uint64(i+1)), ended(tsComplete, ago(time.Duration(20-i)*time.Minute))))
	}
	// The current run completed early: an allow-policy run that ended
	// before older ones did would be the oldest.
	tasks = append(tasks, mkTask("cur", "j", 1, inRun(9), ended(tsComplete, ago(time.Hour))))
	p, prog := reconcileReplicatedJob(svc, tasks, t0, nil)
	if got, want := describe(p), "-r1 -r2 -r3"; got != want {
		t.Errorf("plan %q, want %q", got, want)
	}
	if prog.completed != 1 {
		t.Errorf("completed %d, want 1", prog.completed)
	}
}

func TestReconcileGlobalJob(t *testing.T) {
	nodes := []*shoalv1.Node{mkNode("n1"), mkNode("n2"), mkNode("n3", down()), mkNode("n4", drain())}
	done := func(id, node string, run uint64) *shoalv1.Task {
		return mkTask(id, "g", 0, onNode(node), inRun(run), ended(tsComplete, ago(time.Minute)))
	}
	for _, tc := range []struct {
		name  string
		svc   *shoalv1.Service
		tasks []*shoalv1.Task
		nodes []*shoalv1.Node
		want  string
	}{
		{"one task per eligible node", mkService("g", 0, globalJob(), iteration(1)), nil, nodes, "+n1@1 +n2@1"},
		{"completed nodes are not run again", mkService("g", 0, globalJob(), iteration(1)),
			[]*shoalv1.Task{done("a", "n1", 1), done("b", "n2", 1)}, nodes, ""},
		{"a node that joins later gets one", mkService("g", 0, globalJob(), iteration(1)),
			[]*shoalv1.Task{done("a", "n1", 1), done("b", "n2", 1)}, append(nodes, mkNode("n5")), "+n5@1"},
		{"a new run runs everywhere again", mkService("g", 0, globalJob(), iteration(2)),
			[]*shoalv1.Task{done("a", "n1", 1), done("b", "n2", 1)}, nodes, "+n1@1 +n2@1"},
		{"a failure on a node is retried there", mkService("g", 0, globalJob(), iteration(1)),
			[]*shoalv1.Task{done("a", "n1", 1), mkTask("b", "g", 0, onNode("n2"), inRun(1), ended(tsFailed, ago(time.Minute)))}, nodes, "+n2@1"},
		{"a node drained mid-run: its task stops", mkService("g", 0, globalJob(), iteration(1)),
			[]*shoalv1.Task{done("a", "n1", 1), done("b", "n2", 1), mkTask("c", "g", 0, onNode("n4"), inRun(1))}, nodes, "~c:shutdown/running"},
		{"a paused node gets no task of the run (it takes none)", mkService("g", 0, globalJob(), iteration(1)), nil,
			[]*shoalv1.Node{mkNode("n1"), mkNode("n2", pauseNode())}, "+n1@1"},
		{"a paused node keeps the task of the run it runs", mkService("g", 0, globalJob(), iteration(1)),
			[]*shoalv1.Task{mkTask("c", "g", 0, onNode("n2"), inRun(1))}, []*shoalv1.Node{mkNode("n1"), mkNode("n2", pauseNode())}, "+n1@1"},
	} {
		p, _ := reconcileGlobalJob(tc.svc, tc.tasks, tc.nodes, t0, nil)
		if got := describe(p); got != tc.want {
			t.Errorf("%s: plan %q, want %q", tc.name, got, tc.want)
		}
	}
}

// A run whose only node left without a completion is paused is not going:
// a cron global job under forbid would otherwise skip every firing while
// a node is paused.
func TestGlobalJobRunNotHeldByPausedNode(t *testing.T) {
	nodes := []*shoalv1.Node{mkNode("n1"), mkNode("n2", pauseNode())}
	tasks := []*shoalv1.Task{mkTask("a", "g", 0, onNode("n1"), inRun(1), ended(tsComplete, ago(time.Minute)))}
	p, prog := reconcileGlobalJob(mkService("g", 0, globalJob(), iteration(1)), tasks, nodes, t0, nil)
	if d := describe(p); d != "" || prog.going() || prog.completed != 1 || prog.wanted != 1 {
		t.Fatalf("plan %q, progress %+v (going %v); want nothing to do, 1/1, not going", d, prog, prog.going())
	}
}
