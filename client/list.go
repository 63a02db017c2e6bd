package client

import (
	"context"

	"google.golang.org/grpc"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// listPageSize is the page the listing helpers ask for: the API's largest
// (controlapi.MaxPageSize). The API answers a request naming no page size
// with one page of controlapi.DefaultPageSize, so a caller that wants a
// whole list (the CLI's listings, waits, benchmarks) pages through with
// these helpers.
const listPageSize = 1000

// ListNodes returns every node matching req's filters, in id order,
// reading page after page (req's own page is ignored). Total is the count
// the last page reported.
func ListNodes(ctx context.Context, ctl shoalv1.ControlClient, req *shoalv1.ListNodesRequest, opts ...grpc.CallOption) (*shoalv1.ListNodesResponse, error) {
	out := &shoalv1.ListNodesResponse{}
	page := &shoalv1.Page{PageSize: listPageSize}
	for {
		r, err := ctl.ListNodes(ctx, &shoalv1.ListNodesRequest{Filters: req.GetFilters(), Page: page}, opts...)
		if err != nil {
			return nil, err
		}
		out.Nodes = append(out.Nodes, r.GetNodes()...)
		out.Total = r.GetTotal()
		if r.GetNextPageToken() == "" {
			return out, nil
		}
		page = &shoalv1.Page{PageSize: listPageSize, PageToken: r.GetNextPageToken()}
	}
}

// ListServices is ListNodes for services, with every page's replica
// counts.
func ListServices(ctx context.Context, ctl shoalv1.ControlClient, req *shoalv1.ListServicesRequest, opts ...grpc.CallOption) (*shoalv1.ListServicesResponse, error) {
	out := &shoalv1.ListServicesResponse{Replicas: map[string]*shoalv1.ReplicaCount{}}
	page := &shoalv1.Page{PageSize: listPageSize}
	for {
		r, err := ctl.ListServices(ctx, &shoalv1.ListServicesRequest{Filters: req.GetFilters(), Page: page}, opts...)
		if err != nil {
			return nil, err
		}
		out.Services = append(out.Services, r.GetServices()...)
		for id, c := range r.GetReplicas() {
			out.Replicas[id] = c
		}
		out.Total = r.GetTotal()
		if r.GetNextPageToken() == "" {
			return out, nil
		}
		page = &shoalv1.Page{PageSize: listPageSize, PageToken: r.GetNextPageToken()}
	}
}

// ListTasks is ListNodes for tasks.
func ListTasks(ctx context.Context, ctl shoalv1.ControlClient, req *shoalv1.ListTasksRequest, opts ...grpc.CallOption) (*shoalv1.ListTasksResponse, error) {
	out := &shoalv1.ListTasksResponse{}
	page := &shoalv1.Page{PageSize: listPageSize}
	for {
		r, err := ctl.ListTasks(ctx, &shoalv1.ListTasksRequest{Filters: req.GetFilters(), Page: page}, opts...)
		if err != nil {
			return nil, err
		}
		out.Tasks = append(out.Tasks, r.GetTasks()...)
		out.Total = r.GetTotal()
		if r.GetNextPageToken() == "" {
			return out, nil
		}
		page = &shoalv1.Page{PageSize: listPageSize, PageToken: r.GetNextPageToken()}
	}
}
