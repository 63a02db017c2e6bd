package raftstore

import (
	"context"

	"github.com/hashicorp/raft"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// The contract of api.go, checked by the compiler: a changed signature
// breaks this file before it breaks a caller.
var (
	_ func(Config) (*Store, error)                                         = Open
	_ func(*Store) error                                                   = (*Store).Close
	_ func(*Store) *raft.Raft                                              = (*Store).Raft
	_ func(*Store) bool                                                    = (*Store).IsLeader
	_ func(*Store) (string, string)                                        = (*Store).Leader
	_ func(*Store) <-chan struct{}                                         = (*Store).LeadershipChanged
	_ func(*Store, context.Context, string, string) error                  = (*Store).AddVoter
	_ func(*Store, context.Context, string) error                          = (*Store).RemoveServer
	_ func(*Store) ([]Member, error)                                       = (*Store).Members
	_ func(*Store) Reader                                                  = (*Store).View
	_ func(*Store, context.Context) (Reader, error)                        = (*Store).ReadLinearizable
	_ func(*Store, context.Context, func(WriteTx) error) (uint64, error)   = (*Store).Update
	_ func(*Store, context.Context, uint64, ...Kind) (Subscription, error) = (*Store).Watch
	_ func(*Store) uint64                                                  = (*Store).AppliedIndex
	_ func(*Store) error                                                   = (*Store).Snapshot

	_ func(Reader, string) (*shoalv1.Service, bool) = Get[*shoalv1.Service]
	_ func(Reader) []*shoalv1.Task                  = List[*shoalv1.Task]
	_ func(Reader, string, string) []*shoalv1.Task  = Find[*shoalv1.Task]
	_ func(Reader, string) (*shoalv1.Node, error)   = ResolveRef[*shoalv1.Node]
	_ func(Object) Kind                             = KindOf
	_ func(Object) *shoalv1.StoreObject             = Wrap
	_ func(*shoalv1.StoreObject) Object             = Unwrap
	_ func() string                                 = NewID

	// What manager/forward needs of the store.
	_ interface {
		IsLeader() bool
		Leader() (id, addr string)
		LeadershipChanged() <-chan struct{}
	} = (*Store)(nil)
)
