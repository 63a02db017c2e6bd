package controlapi

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/specrules"
)

// TestPatchServiceBoundsLabelsRm: labels_rm goes into the raft entry as
// sent, so it is bounded like the labels a spec may hold (at most
// MaxLabels keys of 1 to MaxLabelKey bytes) and refused by field path
// otherwise, with nothing written; within the bounds an absent key is no
// error.
func TestPatchServiceBoundsLabelsRm(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	web, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: patchTestSpec(shoalv1.ServiceMode_SERVICE_MODE_REPLICATED)})
	if err != nil {
		t.Fatal(err)
	}
	id := web.GetService().GetMeta().GetId()
	keys := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("absent-%d", i)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		rm   []string
		want string
	}{
		{"too many keys", keys(specrules.MaxLabels + 1), fmt.Sprintf("labels_rm: %d keys, at most %d", specrules.MaxLabels+1, specrules.MaxLabels)},
		{"a huge list", keys(100_000), "labels_rm: 100000 keys"},
		{"a long key", []string{"gone", strings.Repeat("k", specrules.MaxLabelKey+1)}, fmt.Sprintf("labels_rm[1]: a label key is 1 to %d bytes, got %d", specrules.MaxLabelKey, specrules.MaxLabelKey+1)},
		{"an empty key", []string{""}, "labels_rm[0]: a label key is 1 to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := st.AppliedIndex()
			_, err := s.PatchService(ctx, &shoalv1.PatchServiceRequest{ServiceId: id, LabelsRm: tc.rm})
			wantCode(t, err, codes.InvalidArgument, tc.want)
			if after := st.AppliedIndex(); after != before {
				t.Fatalf("applied index moved %d -> %d", before, after)
			}
		})
	}
	rm := append(keys(specrules.MaxLabels-1), "gone")
	if _, err := s.PatchService(ctx, &shoalv1.PatchServiceRequest{ServiceId: id, LabelsRm: rm}); err != nil {
		t.Fatalf("%d keys, absent ones among them: %v", len(rm), err)
	}
	stored, _ := raftstore.Get[*shoalv1.Service](st.View(), id)
	if _, ok := stored.GetSpec().GetLabels()["gone"]; ok || stored.GetSpec().GetLabels()["keep"] != "1" {
		t.Fatalf("labels %v", stored.GetSpec().GetLabels())
	}
}

// TestPatchServiceReplicasOfAnotherModeNamesTheService: `service scale
// a=1 b=2` sends one patch per service, and the read-modify-write it
// replaced named the service it refused; so does the patch's refusal.
func TestPatchServiceReplicasOfAnotherModeNamesTheService(t *testing.T) {
	s, _ := newServer(t)
	ctx := context.Background()
	for _, tc := range []struct {
		mode shoalv1.ServiceMode
		want string
	}{
		{shoalv1.ServiceMode_SERVICE_MODE_GLOBAL, `replicas: only for replicated services, not global (service "glob")`},
		{shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB, `replicas: only for replicated services, not replicated-job (service "job")`},
	} {
		spec := patchTestSpec(tc.mode)
		spec.Name = map[shoalv1.ServiceMode]string{shoalv1.ServiceMode_SERVICE_MODE_GLOBAL: "glob", shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB: "job"}[tc.mode]
		created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.PatchService(ctx, &shoalv1.PatchServiceRequest{ServiceId: created.GetService().GetMeta().GetId(), Replicas: int64p(3)})
		wantCode(t, err, codes.InvalidArgument, tc.want)
	}
}
