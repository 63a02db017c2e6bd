package raftstore

// ForgetCaches drops what the store keeps in memory only to be faster
// (raft's recent log entries, see logCache.forget); nothing it holds is
// lost. For an idle node (daemon/idlemem): a burst's last entries would
// otherwise stay in memory until the next burst pushes them out.
func (s *Store) ForgetCaches() {
	if c, ok := s.logs.(*logCache); ok {
		c.forget()
	}
}
