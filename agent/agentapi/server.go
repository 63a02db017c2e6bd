package agentapi

import (
	"context"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/shoal-dev/shoal/agent/image"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// DefaultPort is the agent API's port when a node is given none: the
// manager port plus one.
const DefaultPort = 4243

// ImageStore is what the server needs of agent/image.Store.
type ImageStore interface {
	// Dir is the store's root; uploads go to Dir()/tmp, which the store
	// empties when it opens, so a crash mid-upload leaves nothing behind.
	Dir() string
	Load(ctx context.Context, path string) ([]image.Image, error)
	List() []image.Image
	Remove(ref string) error
}

// Config configures a Server.
type Config struct {
	NodeID string
	// Tasks returns the tasks this node holds, with their status; used to
	// label log lines with their service and slot.
	Tasks func() []*shoalv1.Task
	// LogPath returns the log file of a task, "" if the node does not know
	// the task (or has removed it and its log).
	LogPath func(taskID string) string
	Images  ImageStore // nil: the image RPCs answer UNAVAILABLE
	Logger  *slog.Logger
	// MaxImageBytes caps one LoadImage upload; 0 means
	// DefaultMaxImageBytes.
	MaxImageBytes int64
	// Current checks a caller's certificate against the cluster's store
	// (a node's current serial and role, an admin certificate not revoked),
	// as trust.Authorizer.Current; the node asks a manager (see
	// daemon). Nil trusts the certificate alone (tests).
	Current func(ctx context.Context, id trust.Identity) (trust.Role, error)
	// Ongoing is Current for streams in progress (trust.Authorizer.Ongoing):
	// it does not hold a renewal against a stream opened before it.
	Ongoing func(ctx context.Context, id trust.Identity) (trust.Role, error)
	// CollectImages, when set, runs after RemoveImage took a reference
	// away: the node's image garbage collection (images without
	// references that no task uses, and their layers), so that removing an
	// image's last tag deletes it as `docker rmi` does instead of leaving
	// a <none> image until the next periodic collection.
	CollectImages func(ctx context.Context) error
	// Execer runs Exec (exec.go); nil: Exec answers UNAVAILABLE.
	Execer Execer
	// Usage reads a running task's counters from its cgroup and network
	// namespace (cpu_usage_ns, memory, pids, net bytes); nil: Stats
	// answers UNAVAILABLE. StatsInterval is the sampling period of Stats
	// (0: DefaultStatsInterval).
	Usage         func(taskID string) (*shoalv1.TaskStats, error)
	StatsInterval time.Duration
}

// DefaultMaxImageBytes caps an uploaded image archive. Images this large
// are unusual; the cap stops a runaway upload long before it matters.
const DefaultMaxImageBytes = 8 << 30

// Server implements shoalv1.AgentAPIServer.
type Server struct {
	shoalv1.UnimplementedAgentAPIServer
	cfg Config
	log *slog.Logger
	// freeBytes reports the free space of the file system holding dir;
	// tests replace it.
	freeBytes func(dir string) (uint64, error)
	execs     execSlots // running execs per task (exec.go)
}

// New returns a server; Register it on a gRPC server, or use Serve.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxImageBytes <= 0 {
		cfg.MaxImageBytes = DefaultMaxImageBytes
	}
	if cfg.Tasks == nil {
		cfg.Tasks = func() []*shoalv1.Task { return nil }
	}
	if cfg.LogPath == nil {
		cfg.LogPath = func(string) string { return "" }
	}
	return &Server{cfg: cfg, log: cfg.Logger.With("component", "agentapi", "node_id", cfg.NodeID), freeBytes: freeBytes}
}

// Register adds the AgentAPI service to g.
func (s *Server) Register(g *grpc.Server) { shoalv1.RegisterAgentAPIServer(g, s) }

// taskIDRE is what a task id may look like (agent/runtime's rule). Ids are
// joined into paths by LogPath, so anything else is refused up front.
var taskIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func validTaskID(id string) bool {
	return taskIDRE.MatchString(id) && !strings.Contains(id, "..")
}
