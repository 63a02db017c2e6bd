package agentapi

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/logstream"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// TestAuthorization: TaskLogs for managers only, images for admins and
// managers, workers refused everything, and no certificate no connection.
func TestAuthorization(t *testing.T) {
	c := newTestCA(t)
	d := newLogsDir(t, task("t1", "web", 1))
	appendLog(t, d.path("t1"), rec{0, "stdout", "x"})
	srv := New(Config{NodeID: "n1", Tasks: d.tasks, LogPath: d.logPath, Images: openImages(t), Logger: testLogger(t)})
	addr := serve(t, c.node("n1", trust.RoleManager), srv)

	callLogs := func(cl shoalv1.AgentAPIClient) error {
		st, err := cl.TaskLogs(testCtx(t), &shoalv1.TaskLogsRequest{TaskIds: []string{"t1"}})
		if err == nil {
			_, _, _, err = collect(t, st)
		}
		return err
	}
	callList := func(cl shoalv1.AgentAPIClient) error {
		_, err := cl.ListImages(testCtx(t), &shoalv1.ListImagesRequest{})
		return err
	}
	callLoad := func(cl shoalv1.AgentAPIClient) error {
		st, err := cl.LoadImage(testCtx(t))
		if err == nil {
			_, err = st.CloseAndRecv()
		}
		return err
	}
	callRemove := func(cl shoalv1.AgentAPIClient) error {
		_, err := cl.RemoveImage(testCtx(t), &shoalv1.RemoveImageRequest{Ref: "nothing:1"})
		return err
	}
	clients := map[string]*tls.Config{
		"manager": c.nodeTLS("m1", trust.RoleManager),
		"worker":  c.nodeTLS("w1", trust.RoleWorker),
		"admin":   c.adminTLS(),
	}
	denied := codes.PermissionDenied
	cases := []struct {
		who    string
		method string
		call   func(shoalv1.AgentAPIClient) error
		want   codes.Code
	}{
		{"manager", "TaskLogs", callLogs, codes.OK},
		{"manager", "ListImages", callList, codes.OK},
		{"manager", "RemoveImage", callRemove, codes.NotFound},    // allowed; nothing to remove
		{"manager", "LoadImage", callLoad, codes.InvalidArgument}, // allowed; empty upload
		{"admin", "TaskLogs", callLogs, denied},
		{"admin", "ListImages", callList, codes.OK},
		{"admin", "RemoveImage", callRemove, codes.NotFound},
		{"admin", "LoadImage", callLoad, codes.InvalidArgument},
		{"worker", "TaskLogs", callLogs, denied},
		{"worker", "ListImages", callList, denied},
		{"worker", "RemoveImage", callRemove, denied},
		{"worker", "LoadImage", callLoad, denied},
	}
	for _, tc := range cases {
		t.Run(tc.who+" "+tc.method, func(t *testing.T) {
			err := tc.call(client(t, addr, "n1", clients[tc.who]))
			if status.Code(err) != tc.want {
				t.Fatalf("got %v, want %s", err, tc.want)
			}
		})
	}

	t.Run("no client certificate", func(t *testing.T) {
		noCert := c.adminTLS().Clone()
		noCert.Certificates = nil
		err := callList(client(t, addr, "n1", noCert))
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("got %v, want the connection refused (UNAVAILABLE)", err)
		}
	})
	t.Run("another cluster's certificate", func(t *testing.T) {
		other := newTestCA(t)
		base := other.adminTLS().Clone()
		base.RootCAs = c.adminTLS().RootCAs // trusts our server, presents a foreign cert
		err := callList(client(t, addr, "n1", base))
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("got %v, want the connection refused (UNAVAILABLE)", err)
		}
	})
}

// TestClientVerifiesNode: the client accepts only the node it asked for,
// whatever its role, and only certificates of the cluster CA.
func TestClientVerifiesNode(t *testing.T) {
	c := newTestCA(t)
	srv := New(Config{NodeID: "n1", Images: openImages(t), Logger: testLogger(t)})
	worker := serve(t, c.node("n1", trust.RoleWorker), srv)
	mgr := serve(t, c.node("n2", trust.RoleManager), New(Config{NodeID: "n2", Images: openImages(t), Logger: testLogger(t)}))
	admin := c.adminTLS()
	cases := []struct {
		name, addr, node string
		base             *tls.Config
		wantErr          string
	}{
		{"worker node", worker, "n1", admin, ""},
		{"manager node", mgr, "n2", admin, ""},
		{"wrong node", worker, "n2", admin, `the agent's certificate is node`},
		{"foreign CA", worker, "n1", newTestCA(t).adminTLS(), "not valid for the cluster CA"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client(t, tc.addr, tc.node, tc.base).ListImages(testCtx(t), &shoalv1.ListImagesRequest{})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want UNAVAILABLE naming %q", err, tc.wantErr)
			}
		})
	}
	if _, err := logstream.ClientTLSConfig(admin, ""); err == nil {
		t.Error("ClientTLSConfig accepted an empty node id")
	}
	if _, err := logstream.ClientTLSConfig(&tls.Config{}, "n1"); err == nil {
		t.Error("ClientTLSConfig accepted a configuration without a CA")
	}
}

func TestServeListenError(t *testing.T) {
	c := newTestCA(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = Serve(context.Background(), ln.Addr().String(), c.node("n1", trust.RoleWorker), New(Config{NodeID: "n1"}))
	if err == nil || !strings.Contains(err.Error(), "agent API listen on") {
		t.Fatalf("Serve on a taken port = %v", err)
	}
}
