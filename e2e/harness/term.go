package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/shoal-dev/shoal/client"
	"github.com/shoal-dev/shoal/manager/controlapi"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// RaftTerm returns the raft term of the cluster's leader, as GetCluster
// reports it (controlapi.RaftTermHeader), asking from inside h's namespace
// with the admin credentials in certDir. Only the leader answers
// GetCluster itself (followers forward it, without the header), so each
// manager is asked directly until one answers with the header.
//
// Comparing terms before and after tells whether an election happened,
// even one that the same node won again, which comparing leaders misses.
func (h *Host) RaftTerm(ctx context.Context, certDir string, managers ...string) (uint64, error) {
	var errs []error
	for _, addr := range managers {
		term, err := h.raftTermOf(ctx, certDir, addr)
		if err == nil {
			return term, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	return 0, fmt.Errorf("no manager told its raft term: %w", errors.Join(errs...))
}

func (h *Host) raftTermOf(ctx context.Context, certDir, addr string) (uint64, error) {
	cl, err := client.Dial(ctx, client.Config{Hosts: []string{addr}, CertDir: certDir, DialOptions: []grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return h.DialContext(ctx, "tcp", a) }),
	}})
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	var md metadata.MD
	if _, err := cl.Control.GetCluster(ctx, &shoalv1.GetClusterRequest{}, grpc.Header(&md)); err != nil {
		return 0, err
	}
	v := md.Get(controlapi.RaftTermHeader)
	if len(v) == 0 {
		return 0, errors.New("answered without a term (not the leader)")
	}
	return strconv.ParseUint(v[0], 10, 64)
}
