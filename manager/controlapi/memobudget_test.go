package controlapi

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// memoBytes is what the memo's encodings hold (their capacities), counted
// from the entries themselves.
func memoBytes(c *checkedTasks) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, e := range c.m {
		n += cap(e.task)
	}
	return n
}

// The encodings the memo keeps are bounded all services together, not
// only one by one: maxCheckedTasks services each with a task near
// maxMemoTaskBytes would otherwise keep ~400 MiB on every manager that
// ever led, where the memo of versions alone is a few MiB. Past the
// budget a service's version is still remembered (its rules are not
// checked again), its encoding is not (the stored task is encoded to
// compare, as before the memo kept any); and the count stays true through
// replacements, shrinking encodings, forget and the memo starting afresh.
func TestCheckedTasksEncodingsBounded(t *testing.T) {
	var c checkedTasks
	big := bytes.Repeat([]byte{'t'}, maxMemoTaskBytes)
	n := 2*maxMemoBytes/maxMemoTaskBytes + 10
	for i := 0; i < n; i++ {
		c.addEncoded(fmt.Sprintf("s%d", i), 1, big)
	}
	if got := memoBytes(&c); got > maxMemoBytes {
		t.Errorf("%d services of %d-byte tasks: the memo keeps %d bytes of encodings, above %d", n, len(big), got, maxMemoBytes)
	}
	if got := memoBytes(&c); got != c.bytes {
		t.Errorf("memo counts %d bytes, holds %d", c.bytes, got)
	}
	kept := 0
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("s%d", i)
		if !c.has(id, 1) {
			t.Fatalf("%s: version not remembered past the budget", id)
		}
		if known, same := c.sameEncoding(id, 1, big); known {
			if !same {
				t.Fatalf("%s: a kept encoding differs", id)
			}
			kept++
		}
	}
	if kept == 0 {
		t.Error("no encoding kept at all")
	}

	// A later version of a service whose encoding is kept: smaller, then
	// none; then gone.
	c.addEncoded("s0", 2, []byte("small"))
	if known, same := c.sameEncoding("s0", 2, []byte("small")); !known || !same {
		t.Error("a later, smaller encoding not kept")
	}
	c.addEncoded("s0", 3, nil)
	c.forget("s1")
	if got := memoBytes(&c); got != c.bytes {
		t.Errorf("after replace and forget: memo counts %d bytes, holds %d", c.bytes, got)
	}
	// Room made by forgetting is used again.
	c.addEncoded("new", 1, big)
	if known, _ := c.sameEncoding("new", 1, big); !known {
		t.Error("an encoding not kept after others freed room")
	}
	for i := 0; i < n; i++ {
		c.forget(fmt.Sprintf("s%d", i))
	}
	c.forget("new")
	if c.bytes != 0 || memoBytes(&c) != 0 {
		t.Errorf("every service forgotten: memo counts %d bytes, holds %d", c.bytes, memoBytes(&c))
	}
}

// The memo's encoding stands for the task of the version it was written
// at only: once another writer (a rollback, another leader's write) stored
// another task at a later version, an update sending the memo's task is a
// change of the stored task (spec_version moves), and one sending the
// stored task is not.
func TestMemoEncodingStaleAfterAnotherWriter(t *testing.T) {
	for _, sendMemoTask := range []bool{true, false} {
		s, st := newServer(t)
		ctx := context.Background()
		created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: validSpec()})
		if err != nil {
			t.Fatal(err)
		}
		id := created.GetService().GetMeta().GetId()
		spec := validSpec()
		spec.Task.Container.Image = "demo:2"
		up, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: id, Version: created.GetService().GetMeta().GetVersion(), Spec: spec})
		if err != nil {
			t.Fatal(err)
		}
		if known, _ := s.checked.sameEncoding(id, up.GetService().GetMeta().GetVersion(), []byte{0}); !known {
			t.Fatal("the update's encoding not remembered")
		}
		// Another writer puts the created task back (as a rollback does).
		idx, err := st.Update(ctx, func(tx raftstore.WriteTx) error {
			cur, _ := raftstore.Get[*shoalv1.Service](tx, id)
			back := proto.Clone(cur).(*shoalv1.Service)
			back.Spec.Task = proto.Clone(created.GetService().GetSpec().GetTask()).(*shoalv1.TaskSpec)
			back.SpecVersion++
			return tx.Update(back)
		})
		if err != nil {
			t.Fatal(err)
		}
		rolled, _ := raftstore.Get[*shoalv1.Service](st.View(), id)
		send := validSpec()
		send.Task = proto.Clone(rolled.GetSpec().GetTask()).(*shoalv1.TaskSpec)
		if sendMemoTask {
			send.Task.Container.Image = "demo:2"
		}
		again, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: id, Version: idx, Spec: send})
		if err != nil {
			t.Fatal(err)
		}
		bumped := again.GetService().GetSpecVersion() != rolled.GetSpecVersion()
		if bumped != sendMemoTask {
			t.Errorf("sending the memo's task %v: spec_version %d → %d", sendMemoTask, rolled.GetSpecVersion(), again.GetService().GetSpecVersion())
		}
		stored, _ := raftstore.Get[*shoalv1.Service](st.View(), id)
		if got := stored.GetSpec().GetTask().GetContainer().GetImage(); got != send.GetTask().GetContainer().GetImage() {
			t.Errorf("stored image %q, sent %q", got, send.GetTask().GetContainer().GetImage())
		}
	}
}
