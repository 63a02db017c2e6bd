package agentapi

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// TestStoreCheck: the agent API asks Config.Current about every caller; a
// manager that is no longer one (demoted, removed) is refused on new calls
// and its followed log is cut.
func TestStoreCheck(t *testing.T) {
	c := newTestCA(t)
	d := newLogsDir(t, task("t1", "web", 1))
	appendLog(t, d.path("t1"), rec{0, "stdout", "a1"})
	var demoted atomic.Bool
	var asked atomic.Int32
	srv := New(Config{NodeID: "n1", Tasks: d.tasks, LogPath: d.logPath, Logger: testLogger(t),
		Current: func(_ context.Context, id trust.Identity) (trust.Role, error) {
			asked.Add(1)
			if id.NodeID == "m1" && demoted.Load() {
				return trust.RoleWorker, nil // demoted, not renewed yet
			}
			if id.NodeID == "gone" {
				return "", fmt.Errorf("node %q: %w", id.NodeID, trust.ErrNodeRemoved)
			}
			return id.Role, nil
		}})
	addr := serve(t, c.node("n1", trust.RoleWorker), srv)
	m1 := client(t, addr, "n1", c.nodeTLS("m1", trust.RoleManager))
	gone := client(t, addr, "n1", c.nodeTLS("gone", trust.RoleManager))

	if _, err := m1.ListImages(testCtx(t), &shoalv1.ListImagesRequest{}); status.Code(err) == codes.PermissionDenied || asked.Load() == 0 {
		t.Fatalf("current manager: %v (asked %d times)", err, asked.Load())
	}
	if _, err := gone.ListImages(testCtx(t), &shoalv1.ListImagesRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("removed manager: %v", err)
	}

	st, err := m1.TaskLogs(testCtx(t), &shoalv1.TaskLogsRequest{TaskIds: []string{"t1"},
		Options: &shoalv1.LogsOptions{Follow: true, Tail: proto.Int64(1)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	demoted.Store(true)
	// The stream is cut at the next recheck (RecheckPeriod); the test
	// context is the generous deadline.
	for {
		_, err := st.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("followed log of a demoted manager ended with %v, want PERMISSION_DENIED", err)
		}
		break
	}
	if _, err := m1.ListImages(testCtx(t), &shoalv1.ListImagesRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("demoted manager on a new call: %v", err)
	}
}

func TestCachedCurrent(t *testing.T) {
	var calls atomic.Int32
	var refuse atomic.Bool
	check := trust.CachedCurrent(func(_ context.Context, id trust.Identity) (trust.Role, error) {
		calls.Add(1)
		if refuse.Load() {
			return "", trust.ErrNotCurrent
		}
		return id.Role, nil
	}, time.Hour)
	id := trust.Identity{NodeID: "m1", Role: trust.RoleManager, Serial: "1"}
	for range 3 {
		if _, err := check(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	if calls.Load() != 1 {
		t.Fatalf("admitting answers asked %d times, want once (cached)", calls.Load())
	}
	// Another serial is another question.
	refuse.Store(true)
	if _, err := check(context.Background(), trust.Identity{NodeID: "m1", Role: trust.RoleManager, Serial: "2"}); err == nil {
		t.Fatal("an uncached refused identity was admitted")
	}
	if _, err := check(context.Background(), trust.Identity{NodeID: "m1", Role: trust.RoleManager, Serial: "2"}); err == nil || calls.Load() != 3 {
		t.Fatalf("refusals must not be cached: %v, %d calls", err, calls.Load())
	}
}
