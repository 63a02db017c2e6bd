package cli

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
	"github.com/shoal-dev/shoal/trust/trusttest"
)

func TestLogsOptions(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		flags   logsFlags
		want    *shoalv1.LogsOptions
		wantErr string
	}{
		{"defaults", logsFlags{tail: "all"}, &shoalv1.LogsOptions{}, ""},
		{"follow and tail", logsFlags{follow: true, tail: "20"}, &shoalv1.LogsOptions{Follow: true, Tail: proto.Int64(20)}, ""},
		{"tail 0", logsFlags{tail: "0"}, &shoalv1.LogsOptions{Tail: proto.Int64(0)}, ""},
		{"since a duration", logsFlags{tail: "all", since: "10m"}, &shoalv1.LogsOptions{Since: timestamppb.New(now.Add(-10 * time.Minute))}, ""},
		{"since a time", logsFlags{tail: "all", since: "2025-02-28T08:30:00+01:00"},
			&shoalv1.LogsOptions{Since: timestamppb.New(time.Date(2025, 2, 28, 7, 30, 0, 0, time.UTC))}, ""},
		{"negative tail", logsFlags{tail: "-3"}, nil, `--tail: want a number of lines or "all", got "-3"`},
		{"word tail", logsFlags{tail: "some"}, nil, "--tail"},
		{"bad since", logsFlags{tail: "all", since: "yesterday"}, nil, `--since: "yesterday" is neither`},
		{"future since", logsFlags{tail: "all", since: "-5m"}, nil, "in the future"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.flags.options(now)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil || !proto.Equal(got, c.want) {
				t.Fatalf("got %v, %v; want %v", got, err, c.want)
			}
		})
	}
}

var logT0 = time.Date(2025, 3, 1, 12, 0, 0, 123000000, time.UTC)

func logMsg(task, svc string, slot uint64, node, stream, text string) *shoalv1.LogMessage {
	return &shoalv1.LogMessage{TaskId: task, ServiceId: "svc" + svc, ServiceName: svc, Slot: slot, NodeId: node,
		Time: timestamppb.New(logT0), Stream: stream, Data: []byte(text)}
}

func TestLogPrinter(t *testing.T) {
	resp := &shoalv1.LogsResponse{
		Warnings: []string{`node "w2" (n2) is down: logs of 1 task unavailable`},
		Messages: []*shoalv1.LogMessage{
			logMsg("abcdefghijklmnopq", "web", 1, "n1", "stdout", "hello"),
			logMsg("zyxwvutsrqponmlkj", "web", 10, "n1", "stderr", "oops"),
			logMsg("globaltaskid0000", "agent", 0, "nodeidlongerthan12", "stdout", "g"),
			logMsg("abcdefghijklmnopq", "web", 1, "n1", "stdout", "again"),
		},
	}
	cases := []struct {
		name       string
		p          logPrinter
		out, err   string
		nodesNamed bool
	}{
		{"prefixes, aligned as far as seen", logPrinter{nodes: map[string]string{"n1": "node1"}},
			"web.1.abcdefghijkl@node1 | hello\n" +
				"agent.nodeidlonger.globaltaskid@nodeidlonger | g\n" +
				"web.1.abcdefghijkl@node1                     | again\n",
			"warning: node \"w2\" (n2) is down: logs of 1 task unavailable\n" +
				"web.10.zyxwvutsrqpo@node1 | oops\n", true},
		{"no task ids", logPrinter{noTaskIDs: true}, "hello\ng\nagain\n",
			"warning: node \"w2\" (n2) is down: logs of 1 task unavailable\noops\n", false},
		{"timestamps", logPrinter{noTaskIDs: true, timestamps: true},
			"2025-03-01T12:00:00.123Z hello\n2025-03-01T12:00:00.123Z g\n2025-03-01T12:00:00.123Z again\n",
			"warning: node \"w2\" (n2) is down: logs of 1 task unavailable\n2025-03-01T12:00:00.123Z oops\n", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			p := c.p
			p.out, p.errOut = &out, &errOut
			p.print(resp)
			if out.String() != c.out {
				t.Errorf("stdout:\n%s\nwant:\n%s", out.String(), c.out)
			}
			if errOut.String() != c.err {
				t.Errorf("stderr:\n%s\nwant:\n%s", errOut.String(), c.err)
			}
		})
	}
}

// fakeManager serves the Control calls the CLI makes here (nodes) and the
// Logs service with canned answers, over mTLS with a manager certificate.
type fakeManager struct {
	shoalv1.UnimplementedControlServer
	shoalv1.UnimplementedLogsServer
	nodes []*shoalv1.Node

	mu   sync.Mutex // guards reqs
	reqs []*shoalv1.LogsRequest
	// logs answers ServiceLogs.
	logs func(*shoalv1.LogsRequest, shoalv1.Logs_ServiceLogsServer) error

	control    // services, tasks and the watch stream (service_test.go)
	netControl // networks (network_test.go)
}

func (f *fakeManager) ListNodes(context.Context, *shoalv1.ListNodesRequest) (*shoalv1.ListNodesResponse, error) {
	return &shoalv1.ListNodesResponse{Nodes: f.nodes}, nil
}

func (f *fakeManager) GetNode(_ context.Context, req *shoalv1.GetNodeRequest) (*shoalv1.GetNodeResponse, error) {
	for _, n := range f.nodes {
		if n.GetMeta().GetId() == req.GetRef() || n.GetSpec().GetName() == req.GetRef() {
			return &shoalv1.GetNodeResponse{Node: n}, nil
		}
	}
	return nil, errdefs.NotFoundf("node %q: not found", req.GetRef())
}

func (f *fakeManager) ServiceLogs(req *shoalv1.LogsRequest, st shoalv1.Logs_ServiceLogsServer) error {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	return f.logs(req, st)
}

// cliCluster is a CA, admin credentials in a cert dir and a fake manager.
type cliCluster struct {
	t       *testing.T
	root    *trust.CA
	certDir string
	mgr     *fakeManager
	addr    string
}

func newCLICluster(t *testing.T) *cliCluster {
	t.Helper()
	root, err := trust.NewRootCA("c1")
	if err != nil {
		t.Fatal(err)
	}
	c := &cliCluster{t: t, root: root, certDir: filepath.Join(t.TempDir(), "admin"), mgr: &fakeManager{}}
	certPEM, keyPEM, err := root.IssueAdmin("admin", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := trust.SaveCreds(c.certDir, "admin", &trust.Creds{CACertPEM: root.CertPEM(), CertPEM: certPEM, KeyPEM: keyPEM}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(c.nodeCerts("m1", trust.RoleManager).ServerTLSConfig())),
		grpc.ChainUnaryInterceptor(errdefs.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(errdefs.StreamServerInterceptor()))
	shoalv1.RegisterControlServer(g, c.mgr)
	shoalv1.RegisterLogsServer(g, c.mgr)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	c.addr = ln.Addr().String()
	return c
}

func (c *cliCluster) nodeCerts(id string, role trust.Role) *trust.CertStore {
	return trusttest.NodeCerts(c.t, c.root, id, role)
}

// run runs the CLI against the fake manager.
func (c *cliCluster) run(args ...string) (code int, out, errOut string) {
	c.t.Helper()
	var o, e bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"--host", c.addr, "--cert-dir", c.certDir, "--data-dir", c.t.TempDir(), "--timeout", "10s"}, args...)
	code = Main(ctx, full, &o, &e)
	return code, o.String(), e.String()
}

func TestLogsCommands(t *testing.T) {
	c := newCLICluster(t)
	c.mgr.nodes = []*shoalv1.Node{{Meta: &shoalv1.Meta{Id: "n1"}, Spec: &shoalv1.NodeSpec{Name: "node1"}}}
	c.mgr.logs = func(req *shoalv1.LogsRequest, st shoalv1.Logs_ServiceLogsServer) error {
		if req.GetService() == "missing" {
			return errdefs.NotFoundf(`service "missing": not found`)
		}
		return st.Send(&shoalv1.LogsResponse{
			Warnings: []string{`node "w2" (n2) did not answer within 3s: logs of 1 task unavailable`},
			Messages: []*shoalv1.LogMessage{logMsg("task1aaaaaaaaaaa", "web", 1, "n1", "stdout", "hi")},
		})
	}

	code, out, errOut := c.run("service", "logs", "--tail", "5", "--since", "2025-03-01T00:00:00Z", "web")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if out != "web.1.task1aaaaaaa@node1 | hi\n" {
		t.Errorf("stdout %q", out)
	}
	if errOut != "warning: node \"w2\" (n2) did not answer within 3s: logs of 1 task unavailable\n" {
		t.Errorf("stderr %q", errOut)
	}
	want := &shoalv1.LogsRequest{Service: "web", Options: &shoalv1.LogsOptions{Tail: proto.Int64(5),
		Since: timestamppb.New(time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC))}}
	if got := c.mgr.reqs[len(c.mgr.reqs)-1]; !proto.Equal(got, want) {
		t.Errorf("request %v, want %v", got, want)
	}

	code, out, _ = c.run("task", "logs", "-f", "--no-task-ids", "task1", "task2")
	if code != 0 || out != "hi\n" {
		t.Errorf("task logs: exit %d, stdout %q", code, out)
	}
	want = &shoalv1.LogsRequest{TaskIds: []string{"task1", "task2"}, Options: &shoalv1.LogsOptions{Follow: true}}
	if got := c.mgr.reqs[len(c.mgr.reqs)-1]; !proto.Equal(got, want) {
		t.Errorf("request %v, want %v", got, want)
	}

	code, _, errOut = c.run("service", "logs", "missing")
	if code == 0 || !strings.Contains(errOut, `Error: service "missing": not found`) {
		t.Errorf("missing service: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = c.run("service", "logs", "--tail", "x", "web")
	if code == 0 || !strings.Contains(errOut, "--tail") {
		t.Errorf("bad flag: exit %d, stderr %q", code, errOut)
	}
	code, _, _ = c.run("task", "logs")
	if code == 0 {
		t.Error("task logs without a task succeeded")
	}
}

// TestLogsManagerSilent: a manager that never answers is given up on
// after --timeout.
func TestLogsManagerSilent(t *testing.T) {
	c := newCLICluster(t)
	release := make(chan struct{})
	defer close(release)
	c.mgr.logs = func(_ *shoalv1.LogsRequest, st shoalv1.Logs_ServiceLogsServer) error {
		select { // no headers, nothing
		case <-release:
		case <-st.Context().Done():
		}
		return nil
	}
	var o, e bytes.Buffer
	code := Main(context.Background(), []string{"--host", c.addr, "--cert-dir", c.certDir, "--timeout", "200ms", "service", "logs", "web"}, &o, &e)
	if code == 0 || !strings.Contains(e.String(), "no answer from a manager within 200ms") {
		t.Fatalf("exit %d, stderr %q", code, e.String())
	}
}
