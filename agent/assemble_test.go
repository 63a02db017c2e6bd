package agent

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestChunkedAssignments: the chunks of a set are applied together, once,
// when the last arrives; a new session's full set drops a set half
// received by the previous one.
func TestChunkedAssignments(t *testing.T) {
	ex := newFakeExecutor()
	a := New(Config{Executor: ex, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	mk := func(id string) *shoalv1.Task {
		return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING,
			Status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED}}
	}
	msg := func(a *shoalv1.Assignments) *shoalv1.SessionMessage {
		return &shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Assignments{Assignments: a}}
	}
	ids := func() string {
		var out []string
		for _, t := range a.Assignments() {
			out = append(out, t.GetMeta().GetId())
		}
		return fmt.Sprint(out)
	}
	must := func(m *shoalv1.SessionMessage) {
		t.Helper()
		if err := a.handle(m); err != nil {
			t.Fatal(err)
		}
	}

	must(msg(&shoalv1.Assignments{Full: true, Upsert: []*shoalv1.Task{mk("old")}}))
	// A full set in three chunks replaces "old" only with the last chunk.
	must(msg(&shoalv1.Assignments{Full: true, More: true, Upsert: []*shoalv1.Task{mk("a"), mk("b")}}))
	must(msg(&shoalv1.Assignments{More: true, Upsert: []*shoalv1.Task{mk("c")}}))
	if got := ids(); got != "[old]" {
		t.Fatalf("applied before the last chunk: %s", got)
	}
	must(msg(&shoalv1.Assignments{Upsert: []*shoalv1.Task{mk("d")}}))
	if got := ids(); got != "[a b c d]" {
		t.Fatalf("after the last chunk: %s", got)
	}
	// A chunked diff: upserts and removals of all chunks, together.
	must(msg(&shoalv1.Assignments{More: true, Upsert: []*shoalv1.Task{mk("e")}}))
	must(msg(&shoalv1.Assignments{Removed: []string{"a", "b"}}))
	if got := ids(); got != "[c d e]" {
		t.Fatalf("after a chunked diff: %s", got)
	}
	// A session ends mid-set; the next session's full set starts afresh.
	must(msg(&shoalv1.Assignments{Full: true, More: true, Upsert: []*shoalv1.Task{mk("lost")}}))
	must(msg(&shoalv1.Assignments{Full: true, Upsert: []*shoalv1.Task{mk("x")}}))
	if got := ids(); got != "[x]" {
		t.Fatalf("after a new session's set: %s", got)
	}
	// Each set reached the executor once, whole: "old", the chunked full
	// set, the chunked diff and the new session's set (the half-received
	// one never).
	if got := ex.assignCalls(); got != 4 {
		t.Fatalf("%d sets handed to the executor, want 4", got)
	}
}

// TestChunkedAssignmentsBounded: a manager that sends more=true without
// end does not grow the agent's memory past its bound: the set is dropped
// with an error (which ends the session), and a later full set is applied.
func TestChunkedAssignmentsBounded(t *testing.T) {
	a := New(Config{Executor: newFakeExecutor(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	a.maxSetBytes = 64 << 10
	chunk := func(full, more bool, id string) *shoalv1.SessionMessage {
		return &shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Assignments{Assignments: &shoalv1.Assignments{Full: full, More: more,
			Upsert: []*shoalv1.Task{{Meta: &shoalv1.Meta{Id: id}, Status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED}}}}}}
	}
	var err error
	for i := 0; i < 1_000_000 && err == nil; i++ {
		err = a.handle(chunk(i == 0, true, fmt.Sprintf("task-%07d", i)))
	}
	if err == nil || !strings.Contains(err.Error(), "without its last chunk") {
		t.Fatalf("endless set: %v, want it refused", err)
	}
	if a.partial != nil || a.partialBytes != 0 {
		t.Fatalf("refused set kept: %d entries, %d bytes", len(a.partial.GetUpsert()), a.partialBytes)
	}
	if err := a.handle(chunk(true, false, "x")); err != nil {
		t.Fatal(err)
	}
	if got := a.Assignments(); len(got) != 1 || got[0].GetMeta().GetId() != "x" {
		t.Fatalf("after the refused set: %v", got)
	}
}
