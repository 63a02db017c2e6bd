package raftstore

// Term returns this member's current raft term. Every election, won or
// not, raises it, so comparing terms tells whether one happened — which
// comparing leaders does not (the same node may be elected again).
func (s *Store) Term() uint64 { return s.raft.CurrentTerm() }
