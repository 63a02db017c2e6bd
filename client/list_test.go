package client

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"google.golang.org/grpc"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// pagedControl serves n of each kind of object in pages, as the API does:
// page_size 0 is a page of 100, over 1000 is an error; the token is the
// index of the next item.
type pagedControl struct {
	shoalv1.ControlClient
	n     int
	calls int
}

func (p *pagedControl) page(pg *shoalv1.Page) (from, to int, next string, err error) {
	p.calls++
	size := int(pg.GetPageSize())
	switch {
	case size > 1000:
		return 0, 0, "", fmt.Errorf("page.page_size: %d is over the maximum", size)
	case size == 0:
		size = 100
	}
	if tok := pg.GetPageToken(); tok != "" {
		if from, err = strconv.Atoi(tok); err != nil {
			return 0, 0, "", err
		}
	}
	to = min(from+size, p.n)
	if to < p.n {
		next = strconv.Itoa(to)
	}
	return from, to, next, nil
}

func (p *pagedControl) ListTasks(_ context.Context, req *shoalv1.ListTasksRequest, _ ...grpc.CallOption) (*shoalv1.ListTasksResponse, error) {
	from, to, next, err := p.page(req.GetPage())
	if err != nil {
		return nil, err
	}
	out := &shoalv1.ListTasksResponse{NextPageToken: next, Total: int64(p.n)}
	for i := from; i < to; i++ {
		out.Tasks = append(out.Tasks, &shoalv1.Task{Meta: &shoalv1.Meta{Id: fmt.Sprintf("t%05d", i)}, ServiceName: req.GetFilters()["service"]})
	}
	return out, nil
}

func (p *pagedControl) ListNodes(_ context.Context, req *shoalv1.ListNodesRequest, _ ...grpc.CallOption) (*shoalv1.ListNodesResponse, error) {
	from, to, next, err := p.page(req.GetPage())
	if err != nil {
		return nil, err
	}
	out := &shoalv1.ListNodesResponse{NextPageToken: next, Total: int64(p.n)}
	for i := from; i < to; i++ {
		out.Nodes = append(out.Nodes, &shoalv1.Node{Meta: &shoalv1.Meta{Id: fmt.Sprintf("n%05d", i)}})
	}
	return out, nil
}

func (p *pagedControl) ListServices(_ context.Context, req *shoalv1.ListServicesRequest, _ ...grpc.CallOption) (*shoalv1.ListServicesResponse, error) {
	from, to, next, err := p.page(req.GetPage())
	if err != nil {
		return nil, err
	}
	out := &shoalv1.ListServicesResponse{NextPageToken: next, Total: int64(p.n), Replicas: map[string]*shoalv1.ReplicaCount{}}
	for i := from; i < to; i++ {
		id := fmt.Sprintf("s%05d", i)
		out.Services = append(out.Services, &shoalv1.Service{Meta: &shoalv1.Meta{Id: id}})
		out.Replicas[id] = &shoalv1.ReplicaCount{Desired: int64(i)}
	}
	return out, nil
}

// TestListAllPages: the listing helpers read every page (the API's
// default page is 100), in order, keep the filters on every call, and
// gather services' replica counts.
func TestListAllPages(t *testing.T) {
	ctx := context.Background()
	for _, n := range []int{0, 1, 100, 1000, 2500} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			ctl := &pagedControl{n: n}
			tasks, err := ListTasks(ctx, ctl, &shoalv1.ListTasksRequest{Filters: map[string]string{"service": "web"}, Page: &shoalv1.Page{PageSize: 5}})
			if err != nil {
				t.Fatal(err)
			}
			if len(tasks.GetTasks()) != n || tasks.GetTotal() != int64(n) {
				t.Fatalf("%d tasks, total %d, want %d", len(tasks.GetTasks()), tasks.GetTotal(), n)
			}
			for i, tk := range tasks.GetTasks() {
				if tk.GetMeta().GetId() != fmt.Sprintf("t%05d", i) || tk.GetServiceName() != "web" {
					t.Fatalf("task %d is %s of %q", i, tk.GetMeta().GetId(), tk.GetServiceName())
				}
			}
			if want := max(1, (n+999)/1000); ctl.calls != want {
				t.Errorf("%d calls, want %d (pages of 1000)", ctl.calls, want)
			}
			nodes, err := ListNodes(ctx, ctl, &shoalv1.ListNodesRequest{})
			if err != nil || len(nodes.GetNodes()) != n {
				t.Fatalf("%d nodes, %v", len(nodes.GetNodes()), err)
			}
			svcs, err := ListServices(ctx, ctl, &shoalv1.ListServicesRequest{})
			if err != nil || len(svcs.GetServices()) != n || len(svcs.GetReplicas()) != n {
				t.Fatalf("%d services, %d counts, %v", len(svcs.GetServices()), len(svcs.GetReplicas()), err)
			}
		})
	}
}
