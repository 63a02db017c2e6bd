package dispatcher

import (
	"maps"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// maxAssignmentBytes bounds the tasks of one Assignments message: a quarter
// of gRPC's default 4 MiB message limit, so a set of any size reaches the
// agent (whose receive limit is that default), with room for the envelope
// and for one large task, which travels alone when it is over the bound.
const maxAssignmentBytes = 1 << 20

// chunkAssignments splits an assignment set (full) or diff into messages
// whose tasks and ids add up to at most limit bytes: every chunk but the
// last has more=true and only the first carries full, so the agent applies
// the whole set, once, when the last chunk arrives. A set or diff that fits
// is one message, as before chunking existed.
//
// A diff of one task or one removal is one message whatever its size (a
// task over the bound travels alone), so it is not sized: at 5,000 nodes
// nearly every diff is one task, and sizing it cost a walk of the task
// before gRPC's own marshal walked it again.
func chunkAssignments(full bool, upsert []*shoalv1.Task, removed []string, limit int) []*shoalv1.Assignments {
	if len(upsert)+len(removed) <= 1 {
		return []*shoalv1.Assignments{{Full: full, Upsert: upsert, Removed: removed}}
	}
	cur := &shoalv1.Assignments{Full: full}
	out := []*shoalv1.Assignments{cur}
	size := 0
	// room starts a new chunk when the current one is not empty and n
	// more bytes would take it over the limit.
	room := func(n int) {
		if size > 0 && size+n > limit {
			cur.More = true
			cur = &shoalv1.Assignments{}
			out = append(out, cur)
			size = 0
		}
		size += n
	}
	for _, t := range upsert {
		// A repeated field costs the message, a tag and a length.
		room(taskSize(t) + 6)
		cur.Upsert = append(cur.Upsert, t)
	}
	for _, id := range removed {
		room(len(id) + 3)
		cur.Removed = append(cur.Removed, id)
	}
	return out
}

// taskSize is proto.Size of a task (tests count the calls).
var taskSize = func(t *shoalv1.Task) int { return proto.Size(t) }

// sendAssignments sends a set or diff in chunks.
func sendAssignments(stream shoalv1.Dispatcher_SessionServer, full bool, upsert []*shoalv1.Task, removed []string) error {
	for _, c := range chunkAssignments(full, upsert, removed, maxAssignmentBytes) {
		if err := stream.Send(&shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Assignments{Assignments: c}}); err != nil {
			return err
		}
	}
	return nil
}

// Bounds of one raft entry of task statuses. An update is counted by its
// task's size, what it costs while a manager of an older release keeps the
// whole-task form (raftstore.StoreFormat; the TASK_STATUS op carries the
// status alone, ~40 bytes): at most 1,000 tasks or 1 MiB per entry (like
// the orchestrator's entries), far below the store's entry limit, however
// many updates piled up during a commit.
const (
	maxStatusEntryOps   = 1000
	maxStatusEntryBytes = 1 << 20
)

// takeStatuses moves from pending into the returned batch as many updates
// as one bounded entry holds (at least one); the rest stay in pending.
func takeStatuses[K comparable](pending map[K]statusUpdate, size func(statusUpdate) int) map[K]statusUpdate {
	if len(pending) <= 1 {
		batch := maps.Clone(pending)
		clear(pending)
		return batch
	}
	batch := make(map[K]statusUpdate, min(len(pending), maxStatusEntryOps))
	bytes := 0
	for k, u := range pending {
		if len(batch) >= maxStatusEntryOps || (len(batch) > 0 && bytes >= maxStatusEntryBytes) {
			break
		}
		bytes += size(u)
		batch[k] = u
		delete(pending, k)
	}
	return batch
}

// statusSizer returns what an update costs in an entry (the task it
// rewrites), read from one view for the whole batch: a view per update
// cost a memdb transaction each. The view is taken at the first call
// (a batch of one is not sized).
func (d *Dispatcher) statusSizer() func(statusUpdate) int {
	var view raftstore.Reader
	return func(u statusUpdate) int {
		if view == nil {
			view = d.cfg.Store.View()
		}
		t, _ := raftstore.Get[*shoalv1.Task](view, u.upd.GetTaskId())
		return proto.Size(t) + proto.Size(u.upd.GetStatus())
	}
}
