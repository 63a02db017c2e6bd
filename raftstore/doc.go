// Package raftstore is Shoal's replicated object store: the cluster's whole
// desired and observed state (cluster, nodes, services, tasks, networks),
// kept identical on every manager by hashicorp/raft.
//
// It knows nothing of containers. Managers open one Store each; the leader
// writes, everybody reads and watches.
//
// # State
//
// Each kind of object lives in a table of the package's own (table.go): a
// copy-on-write B-tree (google/btree, cloned in O(1) by a write txn and
// never changed once committed, so a view is a consistent snapshot that
// later writes do not disturb) of the objects by id, and one of keys
// (value, id) per secondary index (IndexName, IndexServiceID, IndexNodeID,
// IndexState), which reads resolve through the id tree. Only indexes
// something looks up exist (IndexState holds only PENDING tasks,
// IndexNodeID only tasks with a node), and a write re-inserts a key only
// where the index's value changed: a task's status report touches the id
// tree alone. TestTablesMatchModel checks the tables against a map model
// over thousands of random writes, commits, aborts and kept views, and
// TestTablesDeepTreesKeepViews at three levels deep, where writes split and
// merge shared nodes. They replaced go-memdb, whose radix trees cost every
// task write a path copy in each index and ~3 KB of nodes per stored task
// (docs/performance.md); a replica of either build applies the same log
// and restores the other's snapshots to the same state, index keys and
// snapshot bytes (TestReplaysMemdbBuildEntries, TestRestoresMemdbBuildSnapshot,
// against data the memdb build wrote). A lookup resolves each key of a
// secondary index through the id tree: a range of 50,000 matches costs
// about twice what it cost in memdb (BenchmarkFindManyMatches).
// Every object carries meta.version, the raft
// index of its last change. Objects handed out by readers are shared and
// immutable: proto.Clone one before changing it.
//
// # Writing
//
// Update runs a function on a WriteTx, whose reads see its own writes, and
// turns its changes into one raft entry applied all-or-nothing:
//
//	_, err := store.Update(ctx, func(tx raftstore.WriteTx) error {
//		svc, ok := raftstore.Get[*shoalv1.Service](tx, id)
//		if !ok {
//			return fmt.Errorf("service %q: %w", id, raftstore.ErrNotFound)
//		}
//		svc = proto.Clone(svc).(*shoalv1.Service)
//		svc.Spec.Replicas = 3
//		return tx.Update(svc) // svc.meta.version is the version read
//	})
//
// Concurrency is optimistic: an update or delete names the version it read,
// and the FSM rejects the whole entry with ErrVersionConflict if any object
// changed meanwhile; the caller reads again and retries. WriteTx checks the
// same rules early (against its view) so most mistakes fail before a raft
// round trip. Only the leader accepts Update (ErrNotLeader elsewhere, naming
// the leader's address).
//
// The leader's FSM does not decode the entries it proposed: Update
// registers the action it encoded, and Apply takes a deep copy of it
// (cheaper than decoding, and equal to it) when raft hands back the same
// bytes. It copies rather than stores the caller's objects, so a caller
// holding on to an object it passed to Create or Update never aliases the
// store. Every other entry (followers, replays) is decoded. Apply also
// tells the waiting Update that its entry is applied, so a write needs no
// goroutine of its own waiting on raft's future (a change of leadership,
// Close, or a ctx without a deadline fall back to that wait).
//
// Raft hands the FSM the entries committed together (up to 256) at once
// (raft.BatchingFSM), and the FSM applies them in one write transaction
// (up to 8,192 ops, then another) with one commit (batch.go): the copies
// of the tree nodes near the roots and the commit are paid once per batch
// instead of once per entry. Readers see no difference: the
// applied index moves to the batch's last entry under the same lock as the
// commit, each entry's events are published after it under the entry's
// own index, and each entry gets its own verdict, which the FSM also
// hands to the waiting Update as soon as the entry's transaction is
// committed (raft answers a batch's futures only at its end). A refused
// entry in a batch is undone inside the transaction (each object it names
// put back as the batch's earlier entries or the state before left it), so
// it leaves no trace and costs only its own ops; TestApplyBatchMatchesApply
// checks that any cut of the log into batches ends in the same state,
// events and verdicts as applying it entry by entry.
//
// A service update whose previous_spec is the stored spec it replaces (the
// same pointer, with the version check on) leaves that spec out of the
// entry (StoreOp.previous_spec_source = STORED_SPEC): every replica takes
// it from the stored object the check pins, so the old spec is not
// encoded, shipped, decoded and copied a second time; its meta carries
// the id alone (apply stamps the rest on every replica). Entries written
// before the field existed carry it and replay unchanged (prevspec.go).
// A manager of the release before it would ignore the field and drop the
// spec, so the leader writes this form only while every manager node
// reports StoreFormat in its description (storeformat.go: the FSM counts
// the manager nodes that do not, incrementally per node write and from
// scratch on a snapshot restore; a view carries the count of its state).
// The gate only chooses what the leader writes; every replica reads both
// forms. Raise StoreFormat for any new entry form an older release would
// misapply, and gate that form the same way.
//
// A task's status change (WriteTx.UpdateTaskStatus: the dispatcher's
// ACCEPTED, RUNNING, ... reports, the most frequent write of a large
// cluster) goes out as a STORE_OP_KIND_TASK_STATUS op of the id, the
// version read and the status alone (StoreFormat 3, gated as above; before
// that, a whole-task UPDATE); every replica applies it as its stored task
// at that version with the new status, sharing every other sub-message.
// And a task whose spec equals its service's TaskSpec holds the service's
// very pointer, on every replica, interned at apply time and on a snapshot
// restore (taskstatus.go): 100,000 replicas hold one spec, not 100,000
// copies. Both rely on stored objects being immutable: readers Clone
// before changing, and the leader's Apply copies the writer's objects.
//
// The two bulk writes of scheduling at scale are compact too (StoreFormat
// 4, gated as above; taskbulk.go). A created task whose spec is its
// service's TaskSpec at the service's spec_version (as the entry will have
// the service when the op applies) goes out as a STORE_OP_KIND_TASK_CREATE
// op without the spec: every replica takes the stored service's very
// pointer (no copy, no proto.Equal), and refuses the op with
// ErrVersionConflict when the service is gone or its spec_version moved,
// so the writer plans again. The scheduler's assignment
// (WriteTx.AssignTask) goes out as a STORE_OP_KIND_TASK_ASSIGN op of the
// id, the version read, the node and the status, applied like a status op.
// A status update and an assignment of one task in one tx go out as the
// assignment (it carries the status too); any other write of the task in
// the tx makes the op whole.
// While any manager reports a StoreFormat below 4, both go out as whole
// CREATEs and UPDATEs (and the format-2 and -3 forms too: the gate counts
// managers below the newest format); every replica reads every form.
//
// A service change of labels and replicas only (WriteTx.PatchService, the
// Control API's PatchService) goes out as an UPDATE whose service carries
// neither spec nor previous_spec, marked STORED_SPEC_PATCHED, with the
// patch in the op (StoreFormat 5, gated as above; servicepatch.go): every
// replica takes previous_spec from its stored service at the version the
// op names and builds spec with PatchSpec (a shallow copy, a new labels
// map). While any manager reports less, it goes out as the whole update.
//
// Applying a compact op allocates little beyond the trees' own copies: a TASK_STATUS or TASK_ASSIGN op stores the task it decoded (the
// FSM's own copy of the entry), filled in from the stored task, rather
// than a second copy (one with unknown fields is copied, so no replica
// stores them); an event reuses the op's wrapper of its object and an
// entry's events are one allocation; a secondary index key is two of the
// object's own strings (no allocation); and a tx's status update or
// assignment copies the stored meta shallowly (its timestamps are
// replaced, never written into).
//
// # Reading
//
// View is the local applied state, cheap and possibly behind the leader.
// ReadLinearizable (leader only) reflects every acknowledged write. Get,
// List, Find and ResolveRef are typed helpers over any Reader. Page
// (page.go) reads one page of an index range (IndexID with an id prefix,
// or one value of a secondary index) in id order, seeking in the index's
// tree to the id after which it starts and stopping one match past
// the page, so a page of 1,000 costs the same among 100 or 100,000 objects
// (about 0.1 ms against 37 ms for collecting the table and cutting, in
// BenchmarkListPage); Count sizes a range by walking its index without
// collecting it (still one step per object: about 30 ms for 100,000).
// PageBounded also stops after a number of objects visited, so that a
// filter refusing most of a range does not make one call walk all of it.
// Readers other than the store's fall back to Find and List.
//
// # Watching
//
// Watch delivers the changes of every applied entry, in index order, with no
// gaps. The usual pattern is to read a View and watch from its Index()+1,
// which replays anything applied in between. A watch ends (its channel is
// closed, Err says why) when its context ends, when its consumer falls too
// far behind (ErrSlowConsumer), when a snapshot from the leader replaces the
// state (ErrRestored), or on Close; the consumer then reads a fresh View.
// Err already answers ErrRestored from the moment a restore begins (before
// the state is replaced) until it ends the subscriptions, so whatever a
// caller caches while its subscription is live is not trusted across one.
// Every subscription reads from one shared ring of recent events (16384,
// and always the whole last entry): "too far behind" means the ring dropped
// an event the consumer had not read, so a burst of any size does not cut
// a consumer that keeps reading. An event every subscriber has read leaves
// the ring 10 s after it was published (an idle node kept the last 16384
// events, whole tasks, for ever), so resuming from an index older than
// that fails with ErrCompacted and the consumer re-lists.
//
// WatchFiltered adds a filter run inside the hub: the publisher evaluates
// it once per new event and wakes a subscriber only when it has something
// to deliver, and a filtered subscriber is moved over unwanted events
// before the ring drops them, so it is cut only for missing one it wants.
// Watch's kinds are such a filter too: a watcher of nodes is not woken by
// service writes, nor cut by a burst of tasks.
// A thousand dispatcher sessions, each wanting its own node's tasks, cost
// one call per event each instead of a channel hand-off and a wake-up.
// WatchNode goes further for a node's session: the hub routes a task event
// (of a task on no network, nor on one before the update) to the
// subscriptions of the task's node only,
// each with its own queue, so a burst costs O(events), not O(sessions ×
// events), inside the FSM's apply. Its NodeSubscription is read either
// through C (a pump goroutine, started by the first call) or by the
// consumer itself (Ready, Take, Done): no goroutine per subscription.
// Watch's and WatchFiltered's subscriptions are NodeSubscriptions too: a
// loop with a queue of its own (the orchestrator's, the allocator's)
// takes its events itself and is woken by the publisher directly, not by
// a pump the publisher woke.
//
// # Limits
//
// Update refuses a change that encodes to more than Config.MaxEntryBytes
// (default 8 MiB, see DefaultMaxEntryBytes) with ErrEntryTooLarge, before
// raft sees it: writers of many objects split them into smaller entries.
//
// # Leadership
//
// IsLeader is true once this server leads and has applied everything
// committed before its term. LeadershipChanged returns a channel closed at
// the next change, for leader-only loops:
//
//	for {
//		ch := store.LeadershipChanged()
//		if store.IsLeader() { /* start or keep leader work */ }
//		<-ch
//	}
//
// # Persistence
//
// On disk, DataDir holds wal/ (raft's log; its files 0600 as raft.db's,
// though raft-wal makes them 0644), raft.db (raft's stable store,
// term and vote, in bbolt) and snapshots/. A snapshot is the full object set
// written as length-prefixed records; raft takes one every
// SnapshotThreshold entries and keeps TrailingLogs entries behind it for
// slow followers.
//
// The log is hashicorp/raft-wal (as Consul uses): preallocated segment
// files, each append one write and one fdatasync, a CRC over every append,
// so a torn tail left by a crash is cut back to the last complete append
// when the log is opened (an append that returned is never lost). Before it,
// the log lived in raft.db through raft-boltdb, whose appends cost two
// fdatasyncs (bbolt's pages, then its meta page); Open moves such a log into
// wal/ (a copy built beside it, synced, renamed into place, then deleted
// from raft.db, so a crash at any step leaves one complete log). Going back
// to a shoal from before the move is not supported: if one ran on the data
// dir and wrote its log into raft.db again, Open refuses (wal/ and raft.db
// each hold entries the other lacks) and deletes neither.
//
// Raft writes up to 256 entries per append and per AppendEntries
// (MaxAppendEntries), and concurrent Updates are queued while the previous
// append syncs (BatchApplyCh), so many writers share one fdatasync. The
// last entries stay in memory for the leader to replicate (logcache.go),
// bounded by 512 KiB as well as 1,024 entries: an entry is a whole Update,
// and raft's own cache, bounded by count only, was an idle node's largest
// growing object.
//
// The leader hands a new batch to the followers while it writes and syncs
// it itself (raft thesis §10.2.1): our hashicorp/raft is patched
// (third_party/hashicorp/raft, SHOAL-PATCH.md) to stage the batch in the
// log cache (StageLogs: served by GetLog before the store has it), wake
// the replicators, then write, and count itself toward the quorum only
// after its sync, so an entry still commits only on a majority of synced
// copies. A failed write steps the leader down before the stage is dropped
// (UnstageLogs), so a replicator that then misses an entry stops instead
// of shipping a snapshot to a follower ahead of it (stagedreview_test.go).
// The write runs beside raft's main loop, which meanwhile commits, applies
// and answers the batches before it (not this one: nothing is applied on
// the leader beyond its own log) and takes no new batch, RPC or restore
// until it ended (asyncwrite_test.go).
// docs/performance.md has where a write's time goes.
package raftstore
