package controlapi

import (
	"context"
	"strconv"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// BenchmarkUpdateServiceLabel is the bench's write (cmd bench: a 0-replica
// service's 100-byte label changed, the version read named) through the
// handler alone, on a one-node in-memory raft store: time and allocations
// per call of the handler, the store's Update and the FSM's apply (no
// gRPC, TLS or replication). Compare builds with -benchmem.
func BenchmarkUpdateServiceLabel(b *testing.B) {
	s, _ := newServer(b)
	ctx := context.Background()
	spec := func(i int) *shoalv1.ServiceSpec {
		v := strconv.Itoa(i)
		for len(v) < 100 {
			v += "x"
		}
		return &shoalv1.ServiceSpec{Name: "bench-0000", Labels: map[string]string{"bench": v},
			Mode: shoalv1.ServiceMode_SERVICE_MODE_REPLICATED,
			Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "shoal-bench:none", Command: []string{"/bin/true"}}}}
	}
	created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec(0)})
	if err != nil {
		b.Fatal(err)
	}
	id, version := created.GetService().GetMeta().GetId(), created.GetService().GetMeta().GetVersion()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: id, Version: version, Spec: spec(i + 1)})
		if err != nil {
			b.Fatal(err)
		}
		version = resp.GetService().GetMeta().GetVersion()
	}
}

// BenchmarkPatchServiceLabel is BenchmarkUpdateServiceLabel's write as a
// PatchService (the bench's -write patch): the label alone, the version
// read named, the brief reply.
func BenchmarkPatchServiceLabel(b *testing.B) {
	s, _ := newServer(b)
	ctx := context.Background()
	value := func(i int) string {
		v := strconv.Itoa(i)
		for len(v) < 100 {
			v += "x"
		}
		return v
	}
	created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: &shoalv1.ServiceSpec{Name: "bench-0000", Labels: map[string]string{"bench": value(0)},
		Mode: shoalv1.ServiceMode_SERVICE_MODE_REPLICATED,
		Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "shoal-bench:none", Command: []string{"/bin/true"}}}}})
	if err != nil {
		b.Fatal(err)
	}
	id, version := created.GetService().GetMeta().GetId(), created.GetService().GetMeta().GetVersion()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := s.PatchService(ctx, &shoalv1.PatchServiceRequest{ServiceId: id, Version: version,
			LabelsAdd: map[string]string{"bench": value(i + 1)}, View: shoalv1.ServiceView_SERVICE_VIEW_BRIEF})
		if err != nil {
			b.Fatal(err)
		}
		version = resp.GetService().GetMeta().GetVersion()
	}
}
