package controlapi

import (
	"context"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// RaftTermHeader is the response header in which GetCluster carries the
// raft term of the manager that answered (the leader: followers forward
// the call). Tests and tools compare it to tell whether an election
// happened. A header, not a field, until the API has a place for it.
const RaftTermHeader = "shoal-raft-term"

// setTermHeader sets RaftTermHeader; outside a gRPC call it does nothing.
func (s *Server) setTermHeader(ctx context.Context) {
	_ = grpc.SetHeader(ctx, metadata.Pairs(RaftTermHeader, strconv.FormatUint(s.store.Term(), 10)))
}
