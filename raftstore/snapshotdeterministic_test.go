package raftstore

import (
	"bytes"
	"fmt"
	"testing"
)

// TestSnapshotBytesDeterministic: persisting the same state twice gives the
// same bytes, also for objects with maps (labels), whose encoding order Go
// would otherwise randomise, so snapshots of equal states can be compared
// byte for byte (across runs, and across replicas at the same index).
func TestSnapshotBytesDeterministic(t *testing.T) {
	f := newTestFSM()
	svc := mkService("s1", "web")
	svc.Spec.Labels = map[string]string{}
	for i := range 16 {
		svc.Spec.Labels[fmt.Sprint("k", i)] = fmt.Sprint("v", i)
	}
	if err := applyDirect(t, f, 1, t0, opCreate(svc)); err != nil {
		t.Fatal(err)
	}
	first := persisted(t, f)
	for i := range 8 {
		if !bytes.Equal(first, persisted(t, f)) {
			t.Fatalf("persist %d differs from the first", i+1)
		}
	}
}
