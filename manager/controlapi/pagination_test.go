package controlapi

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

func ids[T raftstore.Object](ns []T) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.GetMeta().GetId())
	}
	return out
}

func tokenOf(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// TestParsePage: sizes within bounds (0 the default), tokens of both
// encodings, and every malformed token refused naming the field.
func TestParsePage(t *testing.T) {
	for _, tc := range []struct {
		page    *shoalv1.Page
		want    pageReq
		wantErr string
	}{
		{nil, pageReq{size: DefaultPageSize, total: -1}, ""},
		{&shoalv1.Page{PageSize: 7}, pageReq{size: 7, total: -1}, ""},
		{&shoalv1.Page{PageSize: MaxPageSize}, pageReq{size: MaxPageSize, total: -1}, ""},
		{&shoalv1.Page{PageSize: MaxPageSize + 1}, pageReq{}, "page.page_size: 1001 is over the maximum of 1000"},
		{&shoalv1.Page{PageSize: -1}, pageReq{}, "page.page_size: -1 is negative"},
		{&shoalv1.Page{PageToken: pageToken("sc", 42, "abc")}, pageReq{size: DefaultPageSize, after: "abc", total: 42, scope: "sc"}, ""},
		{&shoalv1.Page{PageToken: pageToken("sc", 0, "a:b")}, pageReq{size: DefaultPageSize, after: "a:b", total: 0, scope: "sc"}, ""},
		{&shoalv1.Page{PageToken: tokenOf("v1:abc")}, pageReq{size: DefaultPageSize, after: "abc", total: -1}, ""},
		// A v2 token's total is not tied to a list: counted afresh.
		{&shoalv1.Page{PageToken: tokenOf("v2:42:abc")}, pageReq{size: DefaultPageSize, after: "abc", total: -1}, ""},
		{&shoalv1.Page{PageToken: "garbage!"}, pageReq{}, "page.page_token"},
		{&shoalv1.Page{PageToken: tokenOf("v4:1:abc")}, pageReq{}, "page.page_token"},
		{&shoalv1.Page{PageToken: tokenOf("v3:1:abc")}, pageReq{}, "page.page_token"},
		{&shoalv1.Page{PageToken: tokenOf("v3::1:abc")}, pageReq{}, "page.page_token"},
		{&shoalv1.Page{PageToken: tokenOf("v3:sc:-1:abc")}, pageReq{}, "page.page_token"},
		{&shoalv1.Page{PageToken: tokenOf("v3:sc:99999999999999999999:a")}, pageReq{}, "page.page_token"},
		{&shoalv1.Page{PageToken: strings.Repeat("A", pageTokenMax+1)}, pageReq{}, "page.page_token: 513 bytes, longer than any token"},
		{&shoalv1.Page{PageToken: tokenOf("abc")}, pageReq{}, "page.page_token"},
		{&shoalv1.Page{PageToken: tokenOf("v2:-1:abc")}, pageReq{}, "page.page_token"},
		{&shoalv1.Page{PageToken: tokenOf("v2:x:abc")}, pageReq{}, "page.page_token"},
		{&shoalv1.Page{PageToken: tokenOf("v2:12")}, pageReq{}, "page.page_token"},
		{&shoalv1.Page{PageToken: tokenOf("v2:99999999999999999999:a")}, pageReq{}, "page.page_token"},
	} {
		got, err := parsePage(tc.page)
		if tc.wantErr != "" {
			wantCode(t, err, codes.InvalidArgument, tc.wantErr)
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%v: %+v %v, want %+v", tc.page, got, err, tc.want)
		}
	}
}

// oldPaginate is how the list handlers cut a page before listPage: from
// the whole filtered list, sorted by id. The tests compare against it.
func oldPaginate[T raftstore.Object](items []T, after string, size int) ([]T, bool) {
	start, _ := slices.BinarySearchFunc(items, after, func(t T, s string) int { return strings.Compare(t.GetMeta().GetId(), s) })
	if start < len(items) && after != "" && items[start].GetMeta().GetId() == after {
		start++
	}
	rest := items[start:]
	if len(rest) <= size {
		return rest, false
	}
	return rest[:size], true
}

// oldListTasks is ListTasks' filtering before listPage: collect, then
// filter one by one.
func oldListTasks(t *testing.T, r raftstore.Reader, f map[string]string) []*shoalv1.Task {
	t.Helper()
	var tasks []*shoalv1.Task
	var nodeID string
	switch {
	case f["service"] != "":
		svc, err := raftstore.ResolveRef[*shoalv1.Service](r, f["service"])
		if err != nil {
			t.Fatal(err)
		}
		tasks = raftstore.Find[*shoalv1.Task](r, raftstore.IndexServiceID, svc.GetMeta().GetId())
	case f["node"] != "":
		n, err := raftstore.ResolveRef[*shoalv1.Node](r, f["node"])
		if err != nil {
			t.Fatal(err)
		}
		tasks = raftstore.Find[*shoalv1.Task](r, raftstore.IndexNodeID, n.GetMeta().GetId())
	default:
		tasks = raftstore.List[*shoalv1.Task](r)
	}
	if f["node"] != "" && f["service"] != "" {
		n, _ := raftstore.ResolveRef[*shoalv1.Node](r, f["node"])
		nodeID = n.GetMeta().GetId()
	}
	var out []*shoalv1.Task
	for _, t := range tasks {
		if nodeID != "" && t.GetNodeId() != nodeID {
			continue
		}
		if v := f["id"]; v != "" && !strings.HasPrefix(t.GetMeta().GetId(), v) {
			continue
		}
		if v := f["desired-state"]; v != "" && !enumIs(t.GetDesiredState().String(), v) {
			continue
		}
		if v := f["state"]; v != "" && !enumIs(t.GetStatus().GetState().String(), v) {
			continue
		}
		out = append(out, t)
	}
	return out
}

// pagesFixture is a store with nodes, services and tasks varied in every
// field the list filters read.
func pagesFixture(t *testing.T) (*Server, *raftstore.Store) {
	s, st := newServer(t)
	states := []shoalv1.TaskState{shoalv1.TaskState_TASK_STATE_PENDING, shoalv1.TaskState_TASK_STATE_RUNNING,
		shoalv1.TaskState_TASK_STATE_FAILED, shoalv1.TaskState_TASK_STATE_SHUTDOWN}
	if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error {
		for i := range 6 {
			role := shoalv1.NodeRole_NODE_ROLE_WORKER
			if i%3 == 0 {
				role = shoalv1.NodeRole_NODE_ROLE_MANAGER
			}
			n := &shoalv1.Node{Meta: &shoalv1.Meta{Id: fmt.Sprintf("n%d", (i*5)%6)}, Role: role,
				Spec:        &shoalv1.NodeSpec{Labels: map[string]string{"zone": fmt.Sprint(i % 2)}},
				Description: &shoalv1.NodeDescription{Hostname: fmt.Sprintf("host%d", i%4)},
				Status:      &shoalv1.NodeStatus{State: shoalv1.NodeState(1 + i%2)}}
			if i%2 == 0 {
				n.Spec.Name = fmt.Sprintf("named%d", i%3)
			}
			if err := tx.Create(n); err != nil {
				return err
			}
		}
		for i := range 5 {
			mode := shoalv1.ServiceMode_SERVICE_MODE_REPLICATED
			if i%2 == 1 {
				mode = shoalv1.ServiceMode_SERVICE_MODE_GLOBAL
			}
			if err := tx.Create(&shoalv1.Service{Meta: &shoalv1.Meta{Id: fmt.Sprintf("s%d", (i*3)%5)},
				Spec: &shoalv1.ServiceSpec{Name: fmt.Sprintf("web%d", i), Mode: mode, Replicas: 2,
					Labels: map[string]string{"tier": fmt.Sprint(i % 2)}}}); err != nil {
				return err
			}
		}
		for i := range 150 {
			node := fmt.Sprintf("n%d", i%7) // n6 does not exist: some tasks are on no known node
			if i%11 == 0 {
				node = ""
			}
			if err := tx.Create(&shoalv1.Task{Meta: &shoalv1.Meta{Id: fmt.Sprintf("%c%d", "tku"[i%3], (i*37)%150)},
				ServiceId: fmt.Sprintf("s%d", i%5), NodeId: node, DesiredState: states[i%2],
				Status: &shoalv1.TaskStatus{State: states[i%4]}}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return s, st
}

// walk reads every page of a list through list, checking each page against
// the old cut of want and that every page reports the first page's total.
func walk[T raftstore.Object](t *testing.T, size int32, want []T, list func(*shoalv1.Page) ([]T, string, int64, error)) {
	t.Helper()
	tok, after := "", ""
	for step := 0; ; step++ {
		got, next, total, err := list(&shoalv1.Page{PageSize: size, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		wantPage, more := oldPaginate(want, after, int(size))
		if !slices.Equal(ids(got), ids(wantPage)) || (next != "") != more || total != int64(len(want)) {
			t.Fatalf("page %d: %v next %q total %d; want %v more=%v total %d", step, ids(got), next, total, ids(wantPage), more, len(want))
		}
		if next == "" {
			return
		}
		tok, after = next, got[len(got)-1].GetMeta().GetId()
	}
}

// TestListPagesAsBefore: for every filter the list calls take, alone and
// combined, and several page sizes, ListTasks, ListNodes and ListServices
// return the very pages (and totals) the old collect-filter-cut gave.
func TestListPagesAsBefore(t *testing.T) {
	s, st := pagesFixture(t)
	ctx := context.Background()
	r := st.View()
	for _, f := range []map[string]string{
		{}, {"service": "s1"}, {"service": "web1"}, {"node": "n2"}, {"node": "named1"}, {"service": "s3", "node": "n1"},
		{"state": "running"}, {"state": "failed", "node": "n3"}, {"state": "STATE_FAILED"}, {"state": "nonsense"}, {"state": "task_state_pending"},
		{"desired-state": "running"}, {"desired-state": "shutdown", "state": "running"}, {"desired-state": "pending", "service": "s2"},
		{"id": "t"}, {"id": "k1"}, {"id": "u", "state": "shutdown"}, {"id": "zz"},
	} {
		want := oldListTasks(t, r, f)
		for _, size := range []int32{1, 4, 25, 1000} {
			t.Run(fmt.Sprintf("tasks %v size %d", f, size), func(t *testing.T) {
				walk(t, size, want, func(p *shoalv1.Page) ([]*shoalv1.Task, string, int64, error) {
					resp, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{Filters: f, Page: p})
					return resp.GetTasks(), resp.GetNextPageToken(), resp.GetTotal(), err
				})
			})
		}
	}
	for _, f := range []map[string]string{
		{}, {"name": "named1"}, {"name": "host1"}, {"name": "host0"}, {"role": "manager"}, {"state": "ready"}, {"label": "zone=1"},
		{"label": "zone"}, {"id": "n1"}, {"name": "named0", "role": "worker"}, {"availability": "active"},
	} {
		var want []*shoalv1.Node
		for _, n := range raftstore.List[*shoalv1.Node](r) {
			if nodeMatches(n, f) {
				want = append(want, n)
			}
		}
		for _, size := range []int32{1, 2, 10} {
			t.Run(fmt.Sprintf("nodes %v size %d", f, size), func(t *testing.T) {
				walk(t, size, want, func(p *shoalv1.Page) ([]*shoalv1.Node, string, int64, error) {
					resp, err := s.ListNodes(ctx, &shoalv1.ListNodesRequest{Filters: f, Page: p})
					return resp.GetNodes(), resp.GetNextPageToken(), resp.GetTotal(), err
				})
			})
		}
	}
	for _, f := range []map[string]string{
		{}, {"name": "web2"}, {"name": "nope"}, {"mode": "global"}, {"label": "tier=0"}, {"id": "s"}, {"id": "s4", "mode": "global"},
	} {
		var want []*shoalv1.Service
		for _, svc := range raftstore.List[*shoalv1.Service](r) {
			if serviceMatches(svc, f) {
				want = append(want, svc)
			}
		}
		for _, size := range []int32{1, 2, 10} {
			t.Run(fmt.Sprintf("services %v size %d", f, size), func(t *testing.T) {
				walk(t, size, want, func(p *shoalv1.Page) ([]*shoalv1.Service, string, int64, error) {
					resp, err := s.ListServices(ctx, &shoalv1.ListServicesRequest{Filters: f, Page: p})
					if err == nil && len(resp.GetReplicas()) != len(resp.GetServices()) {
						t.Fatalf("replica counts for %d of %d services", len(resp.GetReplicas()), len(resp.GetServices()))
					}
					return resp.GetServices(), resp.GetNextPageToken(), resp.GetTotal(), err
				})
			})
		}
	}
	_, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{Filters: map[string]string{"service": "nope"}})
	wantCode(t, err, codes.NotFound, "nope")
}

// TestListPagesAcrossChanges: a token stays valid when its task is deleted
// and tasks are created before and after it: the next page resumes after
// the token's id with the store as it is now; its total is counted afresh
// for a small list and carried from the walk's first page for a big one.
func TestListPagesAcrossChanges(t *testing.T) {
	s, st := pagesFixture(t)
	ctx := context.Background()
	f := map[string]string{"service": "s2"}
	first, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{Filters: f, Page: &shoalv1.Page{PageSize: 5}})
	if err != nil || len(first.GetTasks()) != 5 || first.GetNextPageToken() == "" {
		t.Fatalf("first page %v %v", ids(first.GetTasks()), err)
	}
	last := first.GetTasks()[4].GetMeta().GetId()
	if _, err := st.Update(ctx, func(tx raftstore.WriteTx) error {
		for _, id := range []string{"a0", last + "0", "zz"} {
			if err := tx.Create(&shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, ServiceId: "s2"}); err != nil {
				return err
			}
		}
		return tx.Delete(raftstore.KindTask, last, 0)
	}); err != nil {
		t.Fatal(err)
	}
	want, _ := oldPaginate(oldListTasks(t, st.View(), f), last, 1000)
	resp, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{Filters: f, Page: &shoalv1.Page{PageSize: 1000, PageToken: first.GetNextPageToken()}})
	if err != nil || !slices.Equal(ids(resp.GetTasks()), ids(want)) || resp.GetNextPageToken() != "" {
		t.Fatalf("after changes: %v %v, want %v", ids(resp.GetTasks()), err, ids(want))
	}
	if !slices.Contains(ids(resp.GetTasks()), last+"0") || slices.Contains(ids(resp.GetTasks()), "a0") {
		t.Fatalf("resumed at the wrong place: %v", ids(resp.GetTasks()))
	}
	if resp.GetTotal() != first.GetTotal()+2 {
		t.Fatalf("later page of a small list: total %d, want a fresh %d", resp.GetTotal(), first.GetTotal()+2)
	}
	// A walk whose first page counted more than RecountMax carries that
	// count (the token says so); one that counted fewer counts afresh.
	for _, tc := range []struct{ carried, want int64 }{
		{RecountMax + 1, RecountMax + 1},
		{3, first.GetTotal() + 2},
		{RecountMax, first.GetTotal() + 2},
	} {
		r, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{Filters: f, Page: &shoalv1.Page{PageSize: 2, PageToken: pageToken(pageScope[*shoalv1.Task](f), tc.carried, last)}})
		if err != nil || r.GetTotal() != tc.want || !slices.Equal(ids(r.GetTasks()), ids(want[:2])) {
			t.Fatalf("token carrying %d: %v total %d %v; want total %d", tc.carried, ids(r.GetTasks()), r.GetTotal(), err, tc.want)
		}
	}
	// A token from a manager before v2 (the last id alone) still pages, its
	// total counted afresh.
	old, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{Filters: f, Page: &shoalv1.Page{PageSize: 1000, PageToken: tokenOf("v1:" + last)}})
	if err != nil || !slices.Equal(ids(old.GetTasks()), ids(want)) || old.GetTotal() != first.GetTotal()+2 {
		t.Fatalf("v1 token: %v total %d %v", ids(old.GetTasks()), old.GetTotal(), err)
	}
}

// TestListNodesPages: the API pages with total over filtered items.
func TestListNodesPages(t *testing.T) {
	s, st := newServer(t)
	for _, id := range []string{"n3", "n1", "n2"} {
		addNode(t, st, id, shoalv1.NodeRole_NODE_ROLE_WORKER, shoalv1.NodeState_NODE_STATE_READY)
	}
	resp, err := s.ListNodes(context.Background(), &shoalv1.ListNodesRequest{Page: &shoalv1.Page{PageSize: 2}})
	if err != nil || !slices.Equal(ids(resp.GetNodes()), []string{"n1", "n2"}) || resp.GetTotal() != 3 || resp.GetNextPageToken() == "" {
		t.Fatalf("first page %v %v", resp, err)
	}
	resp, err = s.ListNodes(context.Background(), &shoalv1.ListNodesRequest{Page: &shoalv1.Page{PageSize: 2, PageToken: resp.GetNextPageToken()}})
	if err != nil || !slices.Equal(ids(resp.GetNodes()), []string{"n3"}) || resp.GetNextPageToken() != "" {
		t.Fatalf("second page %v %v", resp, err)
	}
}

// TestListTasksDefaultPage: a list naming no page size is one page of
// DefaultPageSize with a token for the rest, and one over MaxPageSize is
// refused naming the field, for tasks, services and nodes alike.
func TestListTasksDefaultPage(t *testing.T) {
	s, st := newServer(t)
	if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error {
		for i := range DefaultPageSize + 20 {
			id := fmt.Sprintf("t%04d", i)
			if err := tx.Create(&shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, ServiceId: "s1", ServiceName: "web", Slot: uint64(i + 1)}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	resp, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{})
	if err != nil || len(resp.GetTasks()) != DefaultPageSize || resp.GetNextPageToken() == "" || resp.GetTotal() != DefaultPageSize+20 {
		t.Fatalf("no page size: %d tasks, next %q, total %d, %v", len(resp.GetTasks()), resp.GetNextPageToken(), resp.GetTotal(), err)
	}
	rest, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{Page: &shoalv1.Page{PageToken: resp.GetNextPageToken()}})
	if err != nil || len(rest.GetTasks()) != 20 || rest.GetNextPageToken() != "" {
		t.Fatalf("second page: %d tasks, next %q, %v", len(rest.GetTasks()), rest.GetNextPageToken(), err)
	}
	big := &shoalv1.Page{PageSize: MaxPageSize + 1}
	_, err = s.ListTasks(ctx, &shoalv1.ListTasksRequest{Page: big})
	wantCode(t, err, codes.InvalidArgument, "page.page_size")
	_, err = s.ListServices(ctx, &shoalv1.ListServicesRequest{Page: big})
	wantCode(t, err, codes.InvalidArgument, "page.page_size")
	_, err = s.ListNodes(ctx, &shoalv1.ListNodesRequest{Page: big})
	wantCode(t, err, codes.InvalidArgument, "page.page_size")
}

// BenchmarkListTasksWalk: reading 100,000 tasks in pages of 1,000 through
// ListTasks (what `shoal bench schedule` does at its end, and `shoal task
// ls`), against the old way of cutting each page from the whole filtered
// list (oldPaginate over the collected table), in the same run. Per-walk
// time; the old way visits every task for every page.
func BenchmarkListTasksWalk(b *testing.B) {
	const total = 100_000
	s, st := newServer(b)
	ctx := context.Background()
	for i := 0; i < total; i += 1000 {
		if _, err := st.Update(ctx, func(tx raftstore.WriteTx) error {
			for j := range 1000 {
				if err := tx.Create(&shoalv1.Task{ServiceId: fmt.Sprintf("s%d", (i+j)%10), NodeId: fmt.Sprintf("n%d", (i+j)%1000),
					DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING,
					Status:       &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING}}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	// The worst single call: filters the index cannot narrow that match
	// nothing, so the page's walk and the first page's count each visit
	// every task (no per-call bound beyond the table's size).
	b.Run("no-match", func(b *testing.B) {
		for b.Loop() {
			r, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{Filters: map[string]string{"state": "running", "desired-state": "shutdown"}})
			if err != nil || len(r.GetTasks()) != 0 || r.GetTotal() != 0 {
				b.Fatalf("%d tasks, total %d, %v", len(r.GetTasks()), r.GetTotal(), err)
			}
		}
	})
	b.Run("old", func(b *testing.B) {
		for b.Loop() {
			n, after := 0, ""
			for {
				r, err := st.ReadLinearizable(ctx)
				if err != nil {
					b.Fatal(err)
				}
				var items []*shoalv1.Task
				for _, t := range raftstore.List[*shoalv1.Task](r) {
					if strings.HasPrefix(t.GetMeta().GetId(), "") {
						items = append(items, t)
					}
				}
				page, more := oldPaginate(items, after, MaxPageSize)
				n += len(page)
				if !more {
					break
				}
				after = page[len(page)-1].GetMeta().GetId()
			}
			if n != total {
				b.Fatalf("%d tasks", n)
			}
		}
	})
	b.Run("paged", func(b *testing.B) {
		for b.Loop() {
			n, tok := 0, ""
			for {
				resp, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{Page: &shoalv1.Page{PageSize: MaxPageSize, PageToken: tok}})
				if err != nil {
					b.Fatal(err)
				}
				n += len(resp.GetTasks())
				if tok = resp.GetNextPageToken(); tok == "" {
					break
				}
			}
			if n != total {
				b.Fatalf("%d tasks", n)
			}
		}
	})
	b.Run("first-page", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{Page: &shoalv1.Page{PageSize: MaxPageSize}}); err != nil {
				b.Fatal(err)
			}
		}
	})
	addNode(b, st, "n7", shoalv1.NodeRole_NODE_ROLE_WORKER, shoalv1.NodeState_NODE_STATE_READY)
	b.Run("node-page", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{Filters: map[string]string{"node": "n7"}, Page: &shoalv1.Page{PageSize: MaxPageSize}}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestPageTokenScope: a token is good for the list and filters that
// returned it only; on any other it is refused naming the field (its
// total was counted for them), a forged or huge one is refused before it
// is decoded or echoed, and forged ids (NUL, 0xff, past every id) page
// correctly.
func TestPageTokenScope(t *testing.T) {
	s, _ := pagesFixture(t)
	ctx := context.Background()
	f := map[string]string{"service": "s2"}
	first, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{Filters: f, Page: &shoalv1.Page{PageSize: 5}})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("first page: %v", err)
	}
	tok := first.GetNextPageToken()
	// The same filters (an empty one is no filter): the same walk.
	if _, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{Filters: map[string]string{"service": "s2", "node": ""}, Page: &shoalv1.Page{PageToken: tok}}); err != nil {
		t.Fatalf("the walk's own token: %v", err)
	}
	for name, call := range map[string]func() error{
		"other filter value": func() error {
			_, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{Filters: map[string]string{"service": "s1"}, Page: &shoalv1.Page{PageToken: tok}})
			return err
		},
		"a filter more": func() error {
			_, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{Filters: map[string]string{"service": "s2", "state": "running"}, Page: &shoalv1.Page{PageToken: tok}})
			return err
		},
		"no filter": func() error {
			_, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{Page: &shoalv1.Page{PageToken: tok}})
			return err
		},
		"another list": func() error {
			_, err := s.ListNodes(ctx, &shoalv1.ListNodesRequest{Page: &shoalv1.Page{PageToken: tok}})
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			wantCode(t, call(), codes.InvalidArgument, "page.page_token: returned for another list or other filters")
		})
	}
	nodes, err := s.ListNodes(ctx, &shoalv1.ListNodesRequest{Page: &shoalv1.Page{PageSize: 2}})
	if err != nil || nodes.GetNextPageToken() == "" {
		t.Fatalf("nodes: %v", err)
	}
	_, err = s.ListTasks(ctx, &shoalv1.ListTasksRequest{Page: &shoalv1.Page{PageToken: nodes.GetNextPageToken()}})
	wantCode(t, err, codes.InvalidArgument, "another list")

	// A token of 4 MB is refused by its length, not echoed back.
	_, err = s.ListTasks(ctx, &shoalv1.ListTasksRequest{Page: &shoalv1.Page{PageToken: strings.Repeat("QUFB", 1<<20)}})
	wantCode(t, err, codes.InvalidArgument, "page.page_token")
	if len(err.Error()) > 200 {
		t.Fatalf("the error echoes the token: %d bytes", len(err.Error()))
	}

	// Forged ids in a token of this walk page from where they sort.
	all, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{Filters: f, Page: &shoalv1.Page{PageSize: MaxPageSize}})
	if err != nil {
		t.Fatal(err)
	}
	scope := pageScope[*shoalv1.Task](f)
	for _, tc := range []struct {
		after string
		want  []string
	}{
		{"\x00", ids(all.GetTasks())},
		{"k\x00\xff", ids(all.GetTasks())[slices.IndexFunc(ids(all.GetTasks()), func(id string) bool { return id > "k\x00\xff" }):]},
		{"\xff\xff", nil},
	} {
		r, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{Filters: f, Page: &shoalv1.Page{PageSize: MaxPageSize, PageToken: pageToken(scope, 1, tc.after)}})
		if err != nil || !slices.Equal(ids(r.GetTasks()), tc.want) {
			t.Fatalf("after %q: %v %v, want %v", tc.after, ids(r.GetTasks()), err, tc.want)
		}
	}
}

// TestTaskKeepAllocatesNothing: a task list's filter runs for every task
// its walk visits (all of them when the filters match nothing, on every
// call), so it must not allocate: the state filters are matched against
// the TaskStates once per call, not with enumIs per task.
func TestTaskKeepAllocatesNothing(t *testing.T) {
	_, st := pagesFixture(t)
	rng, err := taskRange(st.View(), map[string]string{"state": "running", "desired-state": "shutdown", "id": "t"})
	if err != nil {
		t.Fatal(err)
	}
	task := &shoalv1.Task{Meta: &shoalv1.Meta{Id: "t1"}, DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING,
		Status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING}}
	if rng.keep(task) {
		t.Fatal("a running task desired running kept by desired-state=shutdown")
	}
	task.DesiredState = shoalv1.TaskState_TASK_STATE_SHUTDOWN
	if !rng.keep(task) {
		t.Fatal("the matching task refused")
	}
	if n := testing.AllocsPerRun(100, func() { rng.keep(task) }); n != 0 {
		t.Fatalf("keep allocates %v times per task", n)
	}
	// The matching itself is as before: short, case-insensitive names.
	for v, want := range map[string]bool{"shutdown": true, "SHUTDOWN": true, "Task_State_Shutdown": true, "down": false, "bogus": false} {
		rng, _ := taskRange(st.View(), map[string]string{"desired-state": v})
		if got := rng.keep(task); got != want {
			t.Errorf("desired-state=%s: %v, want %v", v, got, want)
		}
	}
}

// TestListPageVisitBound: a page's walk visits at most PageVisitMax
// objects. Filters the index cannot narrow that match (almost) nothing in
// a range of 2.5 times that get short pages with a token, not a walk of
// the whole range per call; paging on yields exactly the matches.
func TestListPageVisitBound(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	const total = PageVisitMax*5/2 + 3
	for i := 0; i < total; i += 5000 {
		if _, err := st.Update(ctx, func(tx raftstore.WriteTx) error {
			for j := i; j < min(i+5000, total); j++ {
				desired := shoalv1.TaskState_TASK_STATE_RUNNING
				if j%9000 == 4500 {
					desired = shoalv1.TaskState_TASK_STATE_SHUTDOWN
				}
				if err := tx.Create(&shoalv1.Task{Meta: &shoalv1.Meta{Id: fmt.Sprintf("t%06d", j)}, ServiceId: "s1",
					DesiredState: desired, Status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING}}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	f := map[string]string{"state": "running", "desired-state": "shutdown"}
	var got []string
	tok, calls := "", 0
	for {
		r, err := s.ListTasks(ctx, &shoalv1.ListTasksRequest{Filters: f, Page: &shoalv1.Page{PageSize: MaxPageSize, PageToken: tok}})
		if err != nil {
			t.Fatal(err)
		}
		calls++
		if r.GetTotal() != 3 {
			t.Fatalf("call %d: total %d, want 3", calls, r.GetTotal())
		}
		got = append(got, ids(r.GetTasks())...)
		if tok = r.GetNextPageToken(); tok == "" {
			break
		}
	}
	if want := []string{"t004500", "t013500", "t022500"}; !slices.Equal(got, want) {
		t.Fatalf("paged matches %v, want %v", got, want)
	}
	if calls < 3 {
		t.Fatalf("%d calls walked %d tasks: more than %d visits in one", calls, total, PageVisitMax)
	}
}
