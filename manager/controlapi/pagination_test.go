package controlapi

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
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
// items; page_size 0 is everything; sizes are capped; bad input names the
// field.
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
		{"everything", []step{{0, []string{"d", "a", "c", "b", "e"}, false}}},
		{"twos", []step{{2, []string{"a", "b"}, true}, {2, []string{"c", "d"}, true}, {2, []string{"e"}, false}}},
		{"exact", []step{{5, []string{"a", "b", "c", "d", "e"}, false}}},
		{"rest after a page", []step{{3, []string{"a", "b", "c"}, true}, {0, []string{"d", "e"}, false}}},
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
	if got, next, _, _ := paginate(many, &shoalv1.Page{PageSize: 5000}); len(got) != MaxPageSize || next == "" {
		t.Fatalf("page of %d, next %q", len(got), next)
	}
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
