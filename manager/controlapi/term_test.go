package controlapi

import (
	"context"
	"strconv"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// headerStream captures the headers a handler sets.
type headerStream struct {
	grpc.ServerTransportStream
	md metadata.MD
}

func (h *headerStream) Method() string { return "/shoal.v1.Control/GetCluster" }
func (h *headerStream) SetHeader(md metadata.MD) error {
	h.md = metadata.Join(h.md, md)
	return nil
}

// TestGetClusterTerm: GetCluster tells the raft term of the answering
// manager in a header.
func TestGetClusterTerm(t *testing.T) {
	s, st := newServer(t)
	hs := &headerStream{}
	ctx := grpc.NewContextWithServerTransportStream(context.Background(), hs)
	if _, err := s.GetCluster(ctx, &shoalv1.GetClusterRequest{}); err != nil {
		t.Fatal(err)
	}
	got := hs.md.Get(RaftTermHeader)
	if len(got) != 1 {
		t.Fatalf("headers %v: want one %s", hs.md, RaftTermHeader)
	}
	if term, err := strconv.ParseUint(got[0], 10, 64); err != nil || term == 0 || term != st.Term() {
		t.Fatalf("%s: %q, want the store's term %d", RaftTermHeader, got[0], st.Term())
	}
}
