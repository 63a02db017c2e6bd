package orchestrator

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/scheduler"
)

// recordingTx records how the scheduler loop writes each task: through
// AssignTask and UpdateTaskStatus (the compact ops) or a whole Update.
type recordingTx struct {
	raftstore.WriteTx
	writes []string
}

func (r *recordingTx) AssignTask(id string, version uint64, nodeID string, status *shoalv1.TaskStatus) error {
	r.writes = append(r.writes, fmt.Sprintf("assign %s@%d %s %s %q", id, version, nodeID, short(status.GetState()), status.GetMessage()))
	return r.WriteTx.AssignTask(id, version, nodeID, status)
}

func (r *recordingTx) UpdateTaskStatus(id string, version uint64, status *shoalv1.TaskStatus) error {
	r.writes = append(r.writes, fmt.Sprintf("status %s@%d %s %q", id, version, short(status.GetState()), status.GetMessage()))
	return r.WriteTx.UpdateTaskStatus(id, version, status)
}

func (r *recordingTx) Update(o raftstore.Object) error {
	r.writes = append(r.writes, "update "+o.GetMeta().GetId())
	return r.WriteTx.Update(o)
}

// TestScheduleTxWritesCompactly: the scheduler loop writes an assignment
// as AssignTask (node and status, at the version read) and a new reason
// for an unplaceable task as UpdateTaskStatus; an unchanged reason is not
// written; nothing is written whole.
func TestScheduleTxWritesCompactly(t *testing.T) {
	noFit := "no suitable node: 1 does not satisfy the constraints"
	for _, tc := range []struct {
		name  string
		tasks []*shoalv1.Task
		want  []string
	}{
		{
			name:  "placed",
			tasks: []*shoalv1.Task{mkTask("a1", "a", 1, st(tsPending), onNode("")), mkTask("a2", "a", 2, st(tsPending), onNode(""))},
			want:  []string{`assign a1@V n1 assigned "assigned"`, `assign a2@V n1 assigned "assigned"`},
		},
		{
			name: "unplaceable",
			tasks: []*shoalv1.Task{mkTask("m1", "m", 1, st(tsPending), onNode(""), func(tk *shoalv1.Task) {
				tk.Spec.Placement = &shoalv1.Placement{Constraints: []string{"node.labels.zone==mars"}}
			})},
			want: []string{`status m1@V pending "` + noFit + `"`},
		},
		{
			name: "reason unchanged",
			tasks: []*shoalv1.Task{mkTask("m1", "m", 1, st(tsPending), onNode(""), func(tk *shoalv1.Task) {
				tk.Spec.Placement = &shoalv1.Placement{Constraints: []string{"node.labels.zone==mars"}}
				tk.Status.Message = noFit
			})},
			want: nil,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			objs := []raftstore.Object{mkNode("n1")}
			for _, tk := range tc.tasks {
				objs = append(objs, tk)
			}
			create(t, s, objs...)
			var rec *recordingTx
			var res schedResult
			idx, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error {
				rec = &recordingTx{WriteTx: tx}
				res = schedResult{}
				return scheduleTx(rec, t0, &res, "", newBudget(100, 1<<20), scheduler.NewPlaced())
			})
			if err != nil {
				t.Fatal(err)
			}
			v := fmt.Sprint(s.View().Index())
			if len(tc.want) > 0 {
				v = fmt.Sprint(idx - 1) // the tasks' version: the create's entry
			}
			var want []string
			for _, w := range tc.want {
				want = append(want, strings.Replace(w, "@V", "@"+v, 1))
			}
			sort.Strings(rec.writes)
			if strings.Join(rec.writes, "\n") != strings.Join(want, "\n") {
				t.Fatalf("writes:\n%s\nwant:\n%s", strings.Join(rec.writes, "\n"), strings.Join(want, "\n"))
			}
			for _, w := range res.written {
				stored, _ := raftstore.Get[*shoalv1.Task](s.View(), w.GetMeta().GetId())
				if stored.GetNodeId() != w.GetNodeId() || stored.GetStatus().GetState() != tsAssigned || stored.GetSpec() == nil {
					t.Errorf("stored %v, written %v", stored, w)
				}
			}
		})
	}
}
