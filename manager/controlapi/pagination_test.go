package controlapi

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

func objs(ids ...string) []*shoalv1.Node {
	out := make([]*shoalv1.Node, len(ids))
	for i, id := range ids {
		out[i] = &shoalv1.Node{Meta: &shoalv1.Meta{Id: id}}
	}
	return out
}

func ids(ns []*shoalv1.Node) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.GetMeta().GetId())
	}
	return out
}

// TestPaginate: pages follow id order whatever the input order, the token
// of one page leads to the next, the last page has none, total counts all
// items; bad input names the
// field. page_size 0 is the default page; over the maximum is refused.
func TestPaginate(t *testing.T) {
	items := objs("d", "a", "c", "b", "e")
	type step struct {
		size int32
		want []string
		more bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"default page holds all five", []step{{0, []string{"a", "b", "c", "d", "e"}, false}}},
		{"twos", []step{{2, []string{"a", "b"}, true}, {2, []string{"c", "d"}, true}, {2, []string{"e"}, false}}},
		{"exact", []step{{5, []string{"a", "b", "c", "d", "e"}, false}}},
		{"default page after a page", []step{{3, []string{"a", "b", "c"}, true}, {0, []string{"d", "e"}, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := ""
			for i, s := range tc.steps {
				got, next, total, err := paginate(items, &shoalv1.Page{PageSize: s.size, PageToken: tok})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(ids(got), s.want) || (next != "") != s.more || total != 5 {
					t.Fatalf("step %d: %v next %q total %d, want %v more=%v", i, ids(got), next, total, s.want, s.more)
				}
				tok = next
			}
		})
	}
	// A token stays valid when its item is removed before the next page.
	_, next, _, _ := paginate(items, &shoalv1.Page{PageSize: 2})
	got, _, total, err := paginate(objs("a", "c", "d"), &shoalv1.Page{PageSize: 2, PageToken: next})
	if err != nil || !slices.Equal(ids(got), []string{"c", "d"}) || total != 3 {
		t.Fatalf("after a removal: %v %d %v", ids(got), total, err)
	}
	many := make([]*shoalv1.Node, MaxPageSize+5)
	for i := range many {
		many[i] = &shoalv1.Node{Meta: &shoalv1.Meta{Id: fmt.Sprintf("%05d", i)}}
	}
	for _, tc := range []struct {
		size int32
		want int
	}{{0, DefaultPageSize}, {MaxPageSize, MaxPageSize}, {7, 7}} {
		if got, next, total, err := paginate(many, &shoalv1.Page{PageSize: tc.size}); err != nil || len(got) != tc.want || next == "" || total != MaxPageSize+5 {
			t.Fatalf("page_size %d: page of %d, next %q, total %d, %v; want %d", tc.size, len(got), next, total, err, tc.want)
		}
	}
	_, _, _, err = paginate(many, &shoalv1.Page{PageSize: MaxPageSize + 1})
	wantCode(t, err, codes.InvalidArgument, "page.page_size: 1001 is over the maximum of 1000")
	_, _, _, err = paginate(items, &shoalv1.Page{PageSize: -1})
	wantCode(t, err, codes.InvalidArgument, "page.page_size")
	_, _, _, err = paginate(items, &shoalv1.Page{PageToken: "garbage!"})
	wantCode(t, err, codes.InvalidArgument, "page.page_token")
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
