package agentapi

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/logstream"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// logServer serves two tasks' interleaved logs to a manager.
func logServer(t *testing.T) (shoalv1.AgentAPIClient, *logsDir) {
	t.Helper()
	c := newTestCA(t)
	d := newLogsDir(t, task("t1", "web", 1), task("t2", "web", 2))
	appendLog(t, d.path("t1"), rec{0, "stdout", "a1"}, rec{2 * time.Second, "stderr", "a2"}, rec{4 * time.Second, "stdout", "a3"})
	appendLog(t, d.path("t2"), rec{1 * time.Second, "stdout", "b1"}, rec{3 * time.Second, "stdout", "b2"})
	srv := New(Config{NodeID: "n1", Tasks: d.tasks, LogPath: d.logPath, Logger: testLogger(t)})
	addr := serve(t, c.node("n1", trust.RoleWorker), srv)
	return client(t, addr, "n1", c.nodeTLS("m1", trust.RoleManager)), d
}

func lines(msgs []*shoalv1.LogMessage) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, string(m.GetData()))
	}
	return out
}

func TestTaskLogs(t *testing.T) {
	cl, _ := logServer(t)
	tail := func(n int64) *int64 { return &n }
	cases := []struct {
		name         string
		req          *shoalv1.TaskLogsRequest
		want         []string
		wantWarnings []string
	}{
		{"both tasks, merged by time", &shoalv1.TaskLogsRequest{TaskIds: []string{"t1", "t2"}},
			[]string{"a1", "b1", "a2", "b2", "a3"}, nil},
		{"one task", &shoalv1.TaskLogsRequest{TaskIds: []string{"t2"}}, []string{"b1", "b2"}, nil},
		{"duplicates asked once", &shoalv1.TaskLogsRequest{TaskIds: []string{"t2", "t2"}}, []string{"b1", "b2"}, nil},
		{"tail per task", &shoalv1.TaskLogsRequest{TaskIds: []string{"t1", "t2"}, Options: &shoalv1.LogsOptions{Tail: tail(1)}},
			[]string{"b2", "a3"}, nil},
		{"tail 0", &shoalv1.TaskLogsRequest{TaskIds: []string{"t1", "t2"}, Options: &shoalv1.LogsOptions{Tail: tail(0)}}, nil, nil},
		{"since", &shoalv1.TaskLogsRequest{TaskIds: []string{"t1", "t2"}, Options: &shoalv1.LogsOptions{Since: timestamppb.New(t0.Add(2 * time.Second))}},
			[]string{"a2", "b2", "a3"}, nil},
		{"unknown task is a warning", &shoalv1.TaskLogsRequest{TaskIds: []string{"gone", "t2"}},
			[]string{"b1", "b2"}, []string{`task "gone" is not on node "n1" (any more): its logs are not available`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, err := cl.TaskLogs(testCtx(t), c.req)
			if err != nil {
				t.Fatal(err)
			}
			msgs, warnings, _, err := collect(t, st)
			if err != nil {
				t.Fatal(err)
			}
			if got := lines(msgs); !slices.Equal(got, c.want) {
				t.Errorf("lines %q, want %q", got, c.want)
			}
			if !slices.Equal(warnings, c.wantWarnings) {
				t.Errorf("warnings %q, want %q", warnings, c.wantWarnings)
			}
		})
	}
}

func TestTaskLogsLabels(t *testing.T) {
	cl, _ := logServer(t)
	st, err := cl.TaskLogs(testCtx(t), &shoalv1.TaskLogsRequest{TaskIds: []string{"t1"}, Options: &shoalv1.LogsOptions{Tail: proto.Int64(2)}})
	if err != nil {
		t.Fatal(err)
	}
	msgs, _, _, err := collect(t, st)
	if err != nil {
		t.Fatal(err)
	}
	want := &shoalv1.LogMessage{TaskId: "t1", ServiceId: "svc-web", ServiceName: "web", Slot: 1, NodeId: "n1",
		Time: timestamppb.New(t0.Add(2 * time.Second)), Stream: "stderr", Data: []byte("a2")}
	if len(msgs) != 2 || !proto.Equal(msgs[0], want) {
		t.Errorf("got %v, want first %v", msgs, want)
	}
}

func TestTaskLogsInvalid(t *testing.T) {
	cl, _ := logServer(t)
	cases := []struct {
		name string
		req  *shoalv1.TaskLogsRequest
		msg  string
	}{
		{"no task", &shoalv1.TaskLogsRequest{}, "task_ids: at least one"},
		{"path in a task id", &shoalv1.TaskLogsRequest{TaskIds: []string{"../../etc/passwd"}}, "is not a task id"},
		{"dots", &shoalv1.TaskLogsRequest{TaskIds: []string{"a..b"}}, "is not a task id"},
		{"negative tail", &shoalv1.TaskLogsRequest{TaskIds: []string{"t1"}, Options: &shoalv1.LogsOptions{Tail: proto.Int64(-1)}}, "options.tail"},
		{"bad since", &shoalv1.TaskLogsRequest{TaskIds: []string{"t1"}, Options: &shoalv1.LogsOptions{Since: &timestamppb.Timestamp{Nanos: -1}}}, "options.since"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, err := cl.TaskLogs(testCtx(t), c.req)
			if err == nil {
				_, _, _, err = collect(t, st)
			}
			wantCode(t, err, codes.InvalidArgument, c.msg)
		})
	}
}

// TestTaskLogsBatches: many lines go out in batches of at most 256.
func TestTaskLogsBatches(t *testing.T) {
	cl, d := logServer(t)
	var recs []rec
	for i := range 600 {
		recs = append(recs, rec{time.Hour + time.Duration(i)*time.Millisecond, "stdout", fmt.Sprint(i)})
	}
	appendLog(t, d.path("t2"), recs...)
	st, err := cl.TaskLogs(testCtx(t), &shoalv1.TaskLogsRequest{TaskIds: []string{"t2"}})
	if err != nil {
		t.Fatal(err)
	}
	msgs, _, batches, err := collect(t, st)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 602 {
		t.Fatalf("got %d lines, want 602", len(msgs))
	}
	for _, b := range batches {
		if b > logstream.BatchLines {
			t.Fatalf("a batch of %d lines (batches %v)", b, batches)
		}
	}
	if len(batches) < 3 {
		t.Errorf("602 lines in %d batches %v, want at least 3", len(batches), batches)
	}
}

// TestTaskLogsFollow: existing lines, then new ones as written, until the
// logs are removed.
func TestTaskLogsFollow(t *testing.T) {
	cl, d := logServer(t)
	st, err := cl.TaskLogs(testCtx(t), &shoalv1.TaskLogsRequest{TaskIds: []string{"t1", "t2"},
		Options: &shoalv1.LogsOptions{Follow: true, Tail: proto.Int64(1)}})
	if err != nil {
		t.Fatal(err)
	}
	recvLines := func(n int) []string {
		t.Helper()
		var got []string
		for len(got) < n {
			resp, err := st.Recv()
			if err != nil {
				t.Fatalf("after %q: %v", got, err)
			}
			got = append(got, lines(resp.GetMessages())...)
		}
		return got
	}
	got := recvLines(2)
	slices.Sort(got) // following, tasks are not merged by time
	if !slices.Equal(got, []string{"a3", "b2"}) {
		t.Fatalf("existing lines %q, want a3 and b2", got)
	}
	appendLog(t, d.path("t2"), rec{time.Minute, "stdout", "b3"})
	if got := recvLines(1); !slices.Equal(got, []string{"b3"}) {
		t.Fatalf("got %q, want b3", got)
	}
	appendLog(t, d.path("t1"), rec{time.Minute, "stdout", "a4"})
	if got := recvLines(1); !slices.Equal(got, []string{"a4"}) {
		t.Fatalf("got %q, want a4", got)
	}
	// The agent removes the tasks: the stream ends.
	os.Remove(d.path("t1"))
	os.Remove(d.path("t2"))
	if msgs, _, _, err := collect(t, st); err != nil || len(msgs) != 0 {
		t.Fatalf("after removal: %q, %v; want the end of the stream", lines(msgs), err)
	}
}

// TestTaskLogsReadError: a task whose log cannot be read is a warning;
// the other task's lines still arrive.
func TestTaskLogsReadError(t *testing.T) {
	cl, d := logServer(t)
	if err := os.Mkdir(d.path("t1")+".1", 0o755); err != nil { // unreadable as a file
		t.Fatal(err)
	}
	st, err := cl.TaskLogs(testCtx(t), &shoalv1.TaskLogsRequest{TaskIds: []string{"t1", "t2"}})
	if err != nil {
		t.Fatal(err)
	}
	msgs, warnings, _, err := collect(t, st)
	if err != nil {
		t.Fatal(err)
	}
	if got := lines(msgs); !slices.Equal(got, []string{"b1", "b2"}) {
		t.Errorf("lines %q, want b1 b2", got)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], `task "t1" on node "n1": reading its log`) {
		t.Errorf("warnings %q, want one about t1", warnings)
	}
}

// TestTaskLogsHeadersFirst: a follow of a quiet log answers with headers
// at once, so that a manager can tell a live node from a silent one.
func TestTaskLogsHeadersFirst(t *testing.T) {
	cl, _ := logServer(t)
	st, err := cl.TaskLogs(testCtx(t), &shoalv1.TaskLogsRequest{TaskIds: []string{"t1"},
		Options: &shoalv1.LogsOptions{Follow: true, Tail: proto.Int64(0)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Header(); err != nil {
		t.Fatalf("no headers: %v", err)
	}
}

// TestTaskLogsClientHangsUp: a follow ends on the server (readers and
// all) when the caller goes away.
func TestTaskLogsClientHangsUp(t *testing.T) {
	c := newTestCA(t)
	d := newLogsDir(t, task("t1", "web", 1))
	appendLog(t, d.path("t1"), rec{0, "stdout", "a1"})
	srv := New(Config{NodeID: "n1", Tasks: d.tasks, LogPath: d.logPath, Logger: testLogger(t)})
	certs := c.node("n1", trust.RoleWorker)
	returned := make(chan error, 1)
	g := grpc.NewServer(append(ServerOptions(certs, testLogger(t)), grpc.ChainStreamInterceptor(
		func(s any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			err := h(s, ss)
			returned <- errdefs.ToGRPC(err) // as the edge maps it
			return err
		}))...)
	srv.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	defer g.Stop()
	cl := client(t, ln.Addr().String(), "n1", c.nodeTLS("m1", trust.RoleManager))
	ctx, cancel := context.WithCancel(testCtx(t))
	st, err := cl.TaskLogs(ctx, &shoalv1.TaskLogsRequest{TaskIds: []string{"t1"}, Options: &shoalv1.LogsOptions{Follow: true}})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := st.Recv(); err != nil || len(resp.GetMessages()) != 1 {
		t.Fatalf("first response %v, %v", resp, err)
	}
	cancel()
	select {
	case err := <-returned:
		if status.Code(err) != codes.Canceled {
			t.Errorf("the handler returned %v, want CANCELED", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler still runs after the caller left")
	}
}
