package raftstore

import (
	"bytes"
	"context"
	"errors"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Review: a snapshot restore replaces the FSM's state and then ends the
// subscriptions. In between, a fresh view already holds the restored
// state, so a live subscription must already report the restore: callers
// trust what they cached while their subscription is live
// (manager/transport's StoreGeneration: the admin certificates' index
// every API call reads, the raft peers' verdicts), and one that read Err
// as nil there served a verdict of the state before the restore (an
// admin revoked in the restored state was admitted). A subscription
// opened after the restore is live again.
func TestSubscriptionErrCoversRestore(t *testing.T) {
	src := newTestFSM()
	if err := applyDirect(t, src, 1, t0, opCreate(mkService("s1", "web"))); err != nil {
		t.Fatal(err)
	}
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	dst := newTestFSM()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	never := func(*shoalv1.WatchEvent) bool { return false }
	sub, err := dst.hub.watchFiltered(ctx, 0, []Kind{KindNode, KindCluster}, never)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.Err(); err != nil {
		t.Fatalf("a live subscription: Err %v", err)
	}
	var during error
	var replaced bool
	dst.onReplaced = func() {
		replaced = dst.view().Get(KindService, "s1") != nil
		during = sub.Err()
	}
	if err := dst.Restore(readCloser{bytes.NewReader(sink.Bytes())}); err != nil {
		t.Fatal(err)
	}
	if !replaced {
		t.Fatal("the hook did not run after the state was replaced")
	}
	if !errors.Is(during, ErrRestored) {
		t.Fatalf("Err once the state was replaced, before the subscription ended: %v, want ErrRestored", during)
	}
	if err := sub.Err(); !errors.Is(err, ErrRestored) {
		t.Fatalf("Err after the restore: %v, want ErrRestored", err)
	}
	again, err := dst.hub.watchFiltered(ctx, 0, []Kind{KindNode}, never)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := again.Err(); err != nil {
		t.Fatalf("a subscription opened after the restore: Err %v", err)
	}
}
