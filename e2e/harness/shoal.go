package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/datadir"
)

// APIPort is shoal's manager API port.
const APIPort = 4242

// DefaultCLITimeout bounds one CLI invocation unless the caller's context
// says otherwise: long enough for a call to wait out a leader election.
const DefaultCLITimeout = 30 * time.Second

// NodeState is the data dir's node.json, as the daemon writes it.
type NodeState = datadir.Node

// State reads the host's DataDir/node.json (a missing one is
// os.ErrNotExist).
func (h *Host) State() (*NodeState, error) { return datadir.Load(h.DataDir) }

// NodeID returns the node id from node.json, failing the test without one.
func (h *Host) NodeID(t testing.TB) string {
	t.Helper()
	st, err := h.State()
	if err != nil {
		t.Fatalf("%s: %v", h, err)
	}
	if st.NodeID == "" {
		t.Fatalf("%s: node.json has no node_id", h)
	}
	return st.NodeID
}

// AdminCertDir is where `shoal init` writes the admin client credentials
// (ca.crt, admin.crt, admin.key).
func (h *Host) AdminCertDir() string { return datadir.Dir(h.DataDir).Admin() }

// NodeCertDir is where a node keeps its own credentials (ca.crt, node.crt,
// node.key).
func (h *Host) NodeCertDir() string { return filepath.Join(h.DataDir, "certs") }

// NodeFlags are the flags Init, Join and Daemon add before the caller's:
// the host's own cgroup parent (so that its containers can be found and
// are killed by PowerOff and the cleanup) and the demo image loaded into
// the node's image store (demo:latest; see DemoImage).
func (h *Host) NodeFlags(t testing.TB) []string {
	t.Helper()
	return []string{"--cgroup-parent", h.CgroupParent(), "--load-image", DemoImage(t)}
}

// Init starts `shoal init --data-dir D --advertise-addr IP NodeFlags...
// [extra...]`. It does not wait; see the e2e package for readiness checks.
func (h *Host) Init(t testing.TB, extra ...string) *Proc {
	t.Helper()
	args := slices.Concat([]string{"init", "--data-dir", h.DataDir, "--advertise-addr", h.IP}, h.NodeFlags(t), extra)
	return h.Start(t, args...)
}

// Join starts `shoal join --data-dir D --advertise-addr IP --token T
// NodeFlags... [extra...] MANAGER` where manager is host:port.
func (h *Host) Join(t testing.TB, token, manager string, extra ...string) *Proc {
	t.Helper()
	args := slices.Concat([]string{"join", "--data-dir", h.DataDir, "--advertise-addr", h.IP, "--token", token}, h.NodeFlags(t), extra)
	return h.Start(t, append(args, manager)...)
}

// Daemon starts `shoal daemon --data-dir D NodeFlags... [extra...]`: the
// node restarts from its state.
func (h *Host) Daemon(t testing.TB, extra ...string) *Proc {
	t.Helper()
	return h.Start(t, slices.Concat([]string{"daemon", "--data-dir", h.DataDir}, h.NodeFlags(t), extra)...)
}

// Restart is a crash of the node and its restart: every process the
// harness started on the host is SIGKILLed (Crash: containers and their
// shims keep running, as after kill -9 of the shoal process), then `shoal
// daemon` starts from the data dir. The link is left as it is.
func (h *Host) Restart(t testing.TB) *Proc {
	t.Helper()
	if err := h.Crash(); err != nil {
		t.Fatalf("restart %s: %v", h, err)
	}
	return h.Daemon(t)
}

// PowerOn undoes PowerOff: link up, then `shoal daemon`.
func (h *Host) PowerOn(t testing.TB) *Proc {
	t.Helper()
	if err := h.LinkUp(); err != nil {
		t.Fatalf("power on %s: %v", h, err)
	}
	return h.Daemon(t)
}

// Client runs shoal client commands inside a host's namespace, either
// against the host's own node (--data-dir) or against manager addresses
// (--host, with --cert-dir credentials).
type Client struct {
	// Host is where the CLI process runs.
	Host *Host
	// Global are the flags put before the command.
	Global []string
	// Timeout bounds each call when the context has no earlier deadline.
	Timeout time.Duration
}

// Local returns a client for the host's own node: `shoal --data-dir D`.
func (h *Host) Local() *Client {
	return &Client{Host: h, Global: []string{"--data-dir", h.DataDir}, Timeout: DefaultCLITimeout}
}

// Remote returns a client that runs on h and talks to the given manager
// addresses (host:port; several mean failover) with the credentials in
// certDir (ca.crt, admin.crt, admin.key).
func (h *Host) Remote(certDir string, managers ...string) *Client {
	return &Client{Host: h, Global: []string{"--host", strings.Join(managers, ","), "--cert-dir", certDir}, Timeout: DefaultCLITimeout}
}

// Shoal runs `shoal --data-dir D args...` in the host's namespace and
// returns stdout; a failure is an *ExecError with stderr and exit code.
func (h *Host) Shoal(t testing.TB, args ...string) (string, error) {
	t.Helper()
	return h.Local().Run(context.Background(), args...)
}

// ShoalAt runs `shoal --host MANAGERS --cert-dir certDir args...` in the
// host's namespace.
func (h *Host) ShoalAt(t testing.TB, certDir string, managers []string, args ...string) (string, error) {
	t.Helper()
	return h.Remote(certDir, managers...).Run(context.Background(), args...)
}

// Run runs one client command and returns its stdout. It never fails the
// test itself, so it can be called from any goroutine. Every call is
// appended to the host's CLI log (printed when the test fails).
func (c *Client) Run(ctx context.Context, args ...string) (string, error) {
	out, _, err := c.RunOutput(ctx, args...)
	return out, err
}

// RunOutput is Run returning stderr too (warnings, a task's stderr lines
// in `service logs`), also on success.
func (c *Client) RunOutput(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	bin, err := binaryPath()
	if err != nil {
		return "", "", err
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultCLITimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	full := append(append([]string(nil), c.Global...), args...)
	start := time.Now()
	stdout, stderr, err = c.Host.ExecOutput(ctx, bin, full...)
	c.Host.logCLI(full, start, stdout, stderr, err)
	return stdout, stderr, err
}

// JSON runs a command with `--format json` appended and decodes its output
// into msg (a single object, or the first element of an array).
func (c *Client) JSON(ctx context.Context, msg proto.Message, args ...string) error {
	out, err := c.Run(ctx, slices.Concat(args, []string{"--format", "json"})...)
	if err != nil {
		return err
	}
	return DecodeOne(out, msg)
}

// List runs a list command with `--format json` appended and decodes the
// JSON array it prints into messages of type T:
//
//	nodes, err := harness.List[shoalv1.Node](ctx, c, "node", "ls")
func List[T any, P interface {
	*T
	proto.Message
}](ctx context.Context, c *Client, args ...string) ([]P, error) {
	out, err := c.Run(ctx, slices.Concat(args, []string{"--format", "json"})...)
	if err != nil {
		return nil, err
	}
	return DecodeList[T, P](out)
}

var unmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}

// DecodeList decodes the JSON array a list command prints (protojson
// objects; proto or JSON field names) into messages of type T. An empty
// output or `null` is an empty list; a single object is a list of one.
func DecodeList[T any, P interface {
	*T
	proto.Message
}](s string) ([]P, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "null" {
		return nil, nil
	}
	var raws []json.RawMessage
	if strings.HasPrefix(s, "{") {
		raws = []json.RawMessage{json.RawMessage(s)}
	} else if err := json.Unmarshal([]byte(s), &raws); err != nil {
		return nil, fmt.Errorf("not a JSON array: %w: %.200s", err, s)
	}
	out := make([]P, 0, len(raws))
	for i, r := range raws {
		m := P(new(T))
		if err := unmarshal.Unmarshal(r, m); err != nil {
			return nil, fmt.Errorf("element %d as %T: %w: %.200s", i, m, err, r)
		}
		out = append(out, m)
	}
	return out, nil
}

// DecodeOne decodes one protojson object into msg; an array's first (and
// only) element is accepted too, since inspect commands may print arrays.
func DecodeOne(s string, msg proto.Message) error {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "[") {
		var raws []json.RawMessage
		if err := json.Unmarshal([]byte(s), &raws); err != nil {
			return fmt.Errorf("not a JSON array: %w: %.200s", err, s)
		}
		if len(raws) != 1 {
			return fmt.Errorf("want one object, got an array of %d", len(raws))
		}
		s = string(raws[0])
	}
	if err := unmarshal.Unmarshal([]byte(s), msg); err != nil {
		return fmt.Errorf("decoding %T: %w: %.200s", msg, err, s)
	}
	return nil
}

// TokenRe matches a join token: SHOAL-1-<CA digest>-<secret>.
var TokenRe = regexp.MustCompile(`SHOAL-1-[0-9A-Za-z]+-[0-9A-Za-z_]+`)

// Token is a parsed join token.
type Token struct {
	Digest string
	Secret string
}

// ParseToken splits "SHOAL-1-<digest>-<secret>".
func ParseToken(s string) (Token, error) {
	parts := strings.SplitN(strings.TrimSpace(s), "-", 4)
	if len(parts) != 4 || parts[0] != "SHOAL" || parts[1] != "1" || parts[2] == "" || parts[3] == "" {
		return Token{}, fmt.Errorf("%q is not a SHOAL-1-<digest>-<secret> token", s)
	}
	return Token{Digest: parts[2], Secret: parts[3]}, nil
}

func (tk Token) String() string { return "SHOAL-1-" + tk.Digest + "-" + tk.Secret }

// FindToken returns the one join token in s (CLI output).
func FindToken(s string) (string, error) {
	all := TokenRe.FindAllString(s, -1)
	if len(all) != 1 {
		return "", fmt.Errorf("want exactly one join token in %q, found %d", strings.TrimSpace(s), len(all))
	}
	return all[0], nil
}

// ErrNoChange is returned by Mutate when s has no two distinct characters.
var ErrNoChange = errors.New("cannot alter a string of identical characters")

// Mutate returns s with two distinct characters swapped: same length, same
// alphabet, different value. Tests use it to make a well-formed but wrong
// digest or secret.
func Mutate(s string) (string, error) {
	b := []byte(s)
	for i := len(b) - 1; i > 0; i-- {
		if b[i] != b[i-1] {
			b[i], b[i-1] = b[i-1], b[i]
			return string(b), nil
		}
	}
	return "", ErrNoChange
}
