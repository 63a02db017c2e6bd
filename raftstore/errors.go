package raftstore

import (
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
)

// The helpers below build the store's errors in one place, so that WriteTx
// (early checks) and the FSM (authoritative checks at apply time) report the
// same condition with the same words.

func errNotFound(kind Kind, id string) error {
	return fmt.Errorf("%s %q: %w", kind, id, ErrNotFound)
}

func errExists(kind Kind, id string) error {
	return fmt.Errorf("%s %q: %w", kind, id, ErrExists)
}

func errNameInUse(kind Kind, name string) error {
	return fmt.Errorf("%s name %q is already in use: %w", kind, name, ErrExists)
}

func errStale(kind Kind, id string, expected, current uint64) error {
	return fmt.Errorf("%s %q: version %d is stale (current %d): %w", kind, id, expected, current, ErrVersionConflict)
}

// errNotLeader names the leader when it is known, so a caller can go there.
func errNotLeader(leaderAddr string) error {
	if leaderAddr == "" {
		return fmt.Errorf("%w (no leader known)", ErrNotLeader)
	}
	return fmt.Errorf("%w (leader is %q)", ErrNotLeader, leaderAddr)
}

// mapRaftError turns raft's errors into the store's classes; other errors
// pass through wrapped with what was being done.
func (s *Store) mapRaftError(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		_, addr := s.Leader()
		return fmt.Errorf("%s: %w", what, errNotLeader(addr))
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%s: %w", what, ErrClosed)
	}
	return fmt.Errorf("%s: %w", what, err)
}
