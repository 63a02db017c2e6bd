package raftstore

// This file is the package's public contract. Implementations live in the
// other files of the package.

import (
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

// Secondary index names usable with Find.
const (
	IndexName         = "name"          // services, networks: unique; nodes: spec.name or hostname, not unique
	IndexServiceID    = "service_id"    // tasks
	IndexNodeID       = "node_id"       // tasks
	IndexDesiredState = "desired_state" // tasks: value is the enum name, e.g. "TASK_STATE_RUNNING"
	IndexState        = "state"         // tasks: status.state enum name
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

// Reader is a consistent view of the store.
type Reader interface {
	// Get returns the object or nil.
	Get(kind Kind, id string) Object
	// List returns every object of a kind, sorted by id.
	List(kind Kind) []Object
	// Find returns the objects whose index equals value, sorted by id.
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
}

// Config configures Open.
type Config struct {
	NodeID string
	// Addr is this server's raft address as other members dial it.
	Addr string
	// DataDir holds raft.db (bbolt log + stable store) and snapshots/.
	DataDir string
	// InMemory uses raft's in-memory log and snapshot stores (tests only).
	InMemory  bool
	Transport raft.Transport
	// Bootstrap makes a one-voter configuration if there is no raft state yet.
	Bootstrap bool

	HeartbeatTimeout   time.Duration // default 500ms
	ElectionTimeout    time.Duration // default 500ms
	LeaderLeaseTimeout time.Duration // default 250ms
	CommitTimeout      time.Duration // default 10ms
	SnapshotThreshold  uint64        // default 8192
	TrailingLogs       uint64        // default 10240
	SnapshotInterval   time.Duration // default 2m
	// NoSync disables fsync (benchmarks of the difference only).
	NoSync bool
	// MaxEntryBytes bounds the encoded size of one Update's entry
	// (default DefaultMaxEntryBytes).
	MaxEntryBytes int

	Logger *slog.Logger
}

// Member is one raft server.
type Member struct {
	ID       string
	Addr     string
	Suffrage string // "voter", "nonvoter", "staging"
	Leader   bool
}

// Subscription delivers watch events in index order.
type Subscription interface {
	// C is closed when the subscription ends; Err then says why.
	C() <-chan *shoalv1.WatchEvent
	Err() error
	Close()
}

// Store is the replicated object store (implemented in store.go). Its methods:
//
//	Open(cfg Config) (*Store, error)
//	(*Store) Close() error
//	(*Store) Raft() *raft.Raft
//	(*Store) IsLeader() bool
//	(*Store) Leader() (id, addr string)               // "" when unknown
//	(*Store) LeadershipChanged() <-chan struct{}      // closed at the next change of leader or of our leadership
//	(*Store) AddVoter(ctx, id, addr string) error     // ErrNotLeader on followers
//	(*Store) RemoveServer(ctx, id string) error
//	(*Store) Members() ([]Member, error)
//	(*Store) View() Reader                            // local applied state, no raft round trip
//	(*Store) ReadLinearizable(ctx) (Reader, error)    // leader only: VerifyLeader, then waits until applied >= last index seen
//	(*Store) Update(ctx, fn func(WriteTx) error) (index uint64, err error)
//	    // leader only; fn runs on a fresh view; its changes become one raft
//	    // entry applied all-or-nothing; version conflicts found at apply time
//	    // come back as ErrVersionConflict; no changes -> no entry, index 0.
//	(*Store) Watch(ctx, fromIndex uint64, kinds ...Kind) (Subscription, error)
//	    // events with index >= fromIndex (0: from the next entry); ErrCompacted
//	    // when fromIndex is older than the retained ring.
//	(*Store) AppliedIndex() uint64
//	(*Store) Snapshot() error
//
// Generic helpers: Get[T], List[T], Find[T], ResolveRef[T] (ErrAmbiguous for
// an id prefix matching several objects), KindOf, Wrap, Unwrap and NewID
// (typed.go).
//
// IsLeader turns true only once a new leader has applied every entry its
// predecessors committed (a barrier in its term); until then Leader does not
// name this server and Update/ReadLinearizable wait for it (bounded by ctx).
