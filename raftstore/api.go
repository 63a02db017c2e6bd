package raftstore

// This file is the package's public contract. Implementations live in the
// other files of the package.

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Kind names a table.
type Kind string

const (
	KindCluster Kind = "cluster"
	KindNode    Kind = "node"
	KindService Kind = "service"
	KindTask    Kind = "task"
	KindNetwork Kind = "network"
)

// Kinds lists every table.
var Kinds = []Kind{KindCluster, KindNode, KindService, KindTask, KindNetwork}

// Index names usable with Find (the secondary ones) and with Page and
// Count (page.go: a page of one index range, seeking from the previous
// page's last id, and the size of a range without building it).
const (
	IndexID        = "id"         // every kind: meta.id, unique; for Page and Count the value is an id prefix
	IndexName      = "name"       // services, networks: unique; nodes: spec.name or hostname, not unique
	IndexServiceID = "service_id" // tasks
	IndexNodeID    = "node_id"    // tasks with a node; a task without one is not in it
	IndexState     = "state"      // tasks: "TASK_STATE_PENDING" only; tasks in other states are not in it
)

// Object is any stored object (*shoalv1.Cluster, Node, Service, Task, Network).
// Objects returned by readers are shared and immutable: Clone before changing.
type Object interface {
	proto.Message
	GetMeta() *shoalv1.Meta
}

// Error classes. Errors returned by the store wrap one of these with %w and
// say which object and why, e.g.
// `service "x1y2": version 12 is stale (current 15): version conflict`.
var (
	// The marker types (errclass.go) give each its errdefs class.
	ErrNotFound        error = &notFoundError{"not found"}
	ErrExists          error = &alreadyExistsError{"already exists"}
	ErrVersionConflict error = &conflictError{"version conflict"}
	ErrNotLeader       error = &unavailableError{"not the raft leader"}
	ErrCompacted       error = &outOfRangeError{"watch index no longer retained"}
	ErrSlowConsumer          = errors.New("watch consumer fell too far behind")
	ErrRestored              = errors.New("store was restored from a snapshot")
	ErrClosed          error = &unavailableError{"store closed"}
	// ErrEntryTooLarge: one Update's changes encode to more than
	// Config.MaxEntryBytes; nothing was proposed.
	ErrEntryTooLarge error = &invalidArgumentError{"raft entry too large"}
)

// DefaultMaxEntryBytes is the default Config.MaxEntryBytes: 8 MiB. It is
// twice gRPC's default 4 MiB message limit, so any one object an API call
// can carry (and its envelope) still fits one entry, while every entry stays
// small next to raft's budgets: the leader keeps the last 512 entries in
// memory and ships up to 64 per AppendEntries within the transport's 10 s
// I/O timeout, and followers decode each in one piece. Writers of many
// objects (the orchestrator, the dispatcher) split their changes into
// entries of about 1 MiB, far below it; the limit is the backstop that
// keeps any one bug or input from building an entry that exhausts memory
// on every manager and is replayed by every new leader.
const DefaultMaxEntryBytes = 8 << 20

// StoreFormat is the newest raft entry form this release writes and every
// replica of it reads: 1, the release before the field; 2, service updates
// that leave previous_spec out of the entry (STORED_SPEC, prevspec.go); 3,
// task status ops carrying only the status (TASK_STATUS, taskstatus.go); 4,
// tasks created without their service's spec (TASK_CREATE) and
// assignments carrying only the node and status (TASK_ASSIGN, taskbulk.go);
// 5, service updates carrying a patch instead of the spec
// (STORED_SPEC_PATCHED, servicepatch.go).
// Nodes report it in their description (NodeDescription.store_format) and
// the leader writes a form newer than 1 only while every manager reports
// at least this, so that a manager of the previous release, which would
// misapply it, never receives one during a rolling upgrade (storeformat.go).
// Raise it whenever an entry form a previous release would misapply is
// added, and gate that form on it the same way.
const StoreFormat = 5

// Reader is a consistent view of the store.
type Reader interface {
	// Get returns the object or nil.
	Get(kind Kind, id string) Object
	// List returns every object of a kind, sorted by id.
	List(kind Kind) []Object
	// Find returns the objects whose index equals value, sorted by id.
	// (Page and Count walk one such range without collecting it.)
	Find(kind Kind, index, value string) []Object
	// Index is the raft index of the last entry reflected in the view.
	Index() uint64
}

// WriteTx collects changes for one raft entry. Its reads see its own writes.
type WriteTx interface {
	Reader
	// Create adds a new object; an empty meta.id gets a new random id.
	Create(o Object) error
	// Update replaces an object; o.meta.version must be the version read.
	Update(o Object) error
	// Delete removes an object; expectedVersion 0 skips the version check.
	Delete(kind Kind, id string, expectedVersion uint64) error
	// UpdateTaskStatus replaces only the status of task id, read at
	// version (not 0): the entry carries the status alone (taskstatus.go).
	UpdateTaskStatus(id string, version uint64, status *shoalv1.TaskStatus) error
	// AssignTask replaces only the node and the status of task id, read
	// at version (not 0): the entry carries those alone (taskbulk.go).
	AssignTask(id string, version uint64, nodeID string, status *shoalv1.TaskStatus) error
	// PatchService replaces service svc.meta.id, read at svc.meta.version
	// (not 0), with svc: its previous_spec the stored spec, its spec set
	// by the tx to PatchSpec(stored spec, patch), or kept when it is that
	// already. The entry carries the patch, not the specs; this node's
	// store may keep svc's spec itself (servicepatch.go).
	PatchService(svc *shoalv1.Service, patch *shoalv1.ServicePatch) error
}

// Config configures Open.
type Config struct {
	NodeID string
	// Addr is this server's raft address as other members dial it.
	Addr string
	// DataDir holds wal/ (the raft log), raft.db (bbolt stable store)
	// and snapshots/.
	DataDir string
	// InMemory uses raft's in-memory log and snapshot stores (tests only).
	InMemory  bool
	Transport raft.Transport
	// Bootstrap makes a one-voter configuration if there is no raft state yet.
	Bootstrap bool

	HeartbeatTimeout   time.Duration // default 400ms
	ElectionTimeout    time.Duration // default 400ms
	LeaderLeaseTimeout time.Duration // default 400ms (≤ HeartbeatTimeout)
	CommitTimeout      time.Duration // default 10ms
	SnapshotThreshold  uint64        // default 8192
	TrailingLogs       uint64        // default 10240
	SnapshotInterval   time.Duration // default 2m
	// NoSync disables fsync (benchmarks of the difference only).
	NoSync bool
	// MaxEntryBytes bounds the encoded size of one Update's entry
	// (default DefaultMaxEntryBytes).
	MaxEntryBytes int
	// OnCommit and OnApply, when set, receive how long each Update took
	// from proposal to applied (on the leader) and how long the state
	// machine took to apply each entry: the node's metrics.
	OnCommit, OnApply func(time.Duration)

	Logger *slog.Logger
}

// Member is one raft server.
type Member struct {
	ID       string
	Addr     string
	Suffrage string // "voter", "nonvoter", "staging"
	Leader   bool
}

// KeepFunc is a WatchNode filter: it says whether the subscription
// delivers ev. prev is, when ev updates a service, a task or a node, the
// stored object ev replaced — a service less its previous_spec (a shallow
// copy sharing every other field) — and nil for every other event and for
// one applied while the store had no node session (take nil as "may have
// changed"). Both are immutable: compare, never change. A filter that
// acts on a few fields can skip the writes that leave them as they were
// (a service's label, a task's status message). Called with the hub's
// lock held: quick, non-blocking, no store calls.
type KeepFunc func(ev *shoalv1.WatchEvent, prev Object) bool

// Subscription delivers watch events in index order.
type Subscription interface {
	// C is closed when the subscription ends; Err then says why.
	C() <-chan *shoalv1.WatchEvent
	Err() error
	Close()
}

// API is the method set of the replicated object store, *Store (opened
// with Open). The compiler checks that *Store implements it, and
// TestAPIIsStoreMethodSet that *Store has no exported method it does not
// declare, so this list cannot drift. Typed, generic helpers over a Reader
// and the conversions between Object and StoreObject are in typed.go; the
// paging ones in page.go:
//
//	Page[T](r, index, value, after, n, keep) (page []T, more bool)
//	Count[T](r, index, value, keep) int
//	CountAtMost[T](r, index, value, keep, max) (n int, complete bool)
//
// Page costs what the page costs (a seek in the index, then the objects it
// visits), not what the table holds.
type API interface {
	Close() error
	// Raft is the underlying raft node (membership, stats, tests).
	Raft() *raft.Raft
	// IsLeader turns true only once a new leader has applied every entry
	// its predecessors committed (a barrier in its term); until then
	// Leader does not name this server and Update/ReadLinearizable wait
	// for it (bounded by ctx).
	IsLeader() bool
	// Leader names the current leader; "" when unknown.
	Leader() (id, addr string)
	// LeadershipChanged is closed at the next change of leader or of our
	// leadership.
	LeadershipChanged() <-chan struct{}
	// Term is raft's current term.
	Term() uint64
	// AddVoter adds or promotes a voter (ErrNotLeader on followers).
	AddVoter(ctx context.Context, id, addr string) error
	RemoveServer(ctx context.Context, id string) error
	Members() ([]Member, error)
	// View is the local applied state, without a raft round trip.
	View() Reader
	// ReadLinearizable (leader only) verifies leadership, then waits
	// until the applied index reaches the last index seen.
	ReadLinearizable(ctx context.Context) (Reader, error)
	// Update (leader only) runs fn on a fresh view; its changes become
	// one raft entry applied all-or-nothing. Version conflicts found at
	// apply time come back as ErrVersionConflict; no changes, no entry
	// (index 0).
	Update(ctx context.Context, fn func(WriteTx) error) (index uint64, err error)
	// Watch delivers events with index >= fromIndex (0: from the next
	// entry); ErrCompacted when fromIndex is older than the retained ring.
	Watch(ctx context.Context, fromIndex uint64, kinds ...Kind) (Subscription, error)
	// WatchFiltered is Watch delivering only the events keep accepts
	// (called under the hub's lock: quick, non-blocking).
	WatchFiltered(ctx context.Context, fromIndex uint64, keep func(*shoalv1.WatchEvent) bool, kinds ...Kind) (Subscription, error)
	// WatchNode is WatchFiltered routed to one node's subscriptions (task
	// events reach only their node's subscribers).
	WatchNode(ctx context.Context, fromIndex uint64, nodeID string, keep KeepFunc, kinds ...Kind) (NodeSubscription, error)
	AppliedIndex() uint64
	Snapshot() error
	// ForgetCaches drops what the store keeps in memory only for speed
	// (recent raft log entries); for an idle node (daemon/idlemem).
	ForgetCaches()
}

var _ API = (*Store)(nil)
