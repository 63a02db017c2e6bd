package controlapi

import (
	"context"
	"errors"

	"github.com/shoal-dev/shoal/raftstore"
)

// ignoreVersionAttempts bounds the reads of a write with ignore_version
// that keeps meeting concurrent writes of its object.
const ignoreVersionAttempts = 5

// updateIgnoringVersion runs fn in a store update. A request with
// ignore_version overwrites what the caller sends whatever version is
// stored, but fn builds the object from the one it reads (fields other
// writers own: a service's VIPs, update status and spec_version, a node's
// status, role and certificate serial), so the write is still checked
// against the version fn read and, when another write came in between,
// is built again from the new state: writing it unchecked put back what
// that write changed (and gave a second task spec the spec_version of the
// first, which the orchestrator then never rolled out). Without
// ignore_version a conflict is the caller's to handle.
func (s *Server) updateIgnoringVersion(ctx context.Context, ignore bool, fn func(raftstore.WriteTx) error) (uint64, error) {
	for attempt := 1; ; attempt++ {
		idx, err := s.store.Update(ctx, fn)
		if !ignore || attempt >= ignoreVersionAttempts || !errors.Is(err, raftstore.ErrVersionConflict) {
			return idx, err
		}
	}
}
