package raftstore

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// BenchmarkWatchRingPrevMemory: the heap the watch ring's prevs hold and
// nothing else does, once the ring is full of service updates of distinct
// services (each updated once within the ring: the worst case, as the
// prev of a service's second update is its first update's event object,
// held anyway). Each service's spec carries env bytes of the size given.
// Run with -benchtime 1x; prev-B/event is the figure.
func BenchmarkWatchRingPrevMemory(b *testing.B) {
	const services = 2000
	for _, envBytes := range []int{1 << 10, 64 << 10} {
		for _, write := range []string{"patch", "whole", "api"} {
			b.Run(fmt.Sprintf("env=%dKiB/%s", envBytes>>10, write), func(b *testing.B) {
				for b.Loop() {
					s := single(b, options{})
					env := func(i, round int) []string { // distinct bytes per service and version
						return []string{fmt.Sprintf("BIG%d.%d=", i, round) + strings.Repeat("x", envBytes)}
					}
					for i := 0; i < services; i += 100 {
						mustUpdate(b, s, func(tx WriteTx) error {
							for j := i; j < i+100; j++ {
								svc := mkService(fmt.Sprintf("s%04d", j), fmt.Sprintf("web%04d", j))
								svc.Spec.Task = &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo", Env: env(j, 0)}}
								if err := tx.Create(svc); err != nil {
									return err
								}
							}
							return nil
						})
					}
					// api: UpdateService's write (nextService: a spec decoded
					// from the request, the stored one as previous_spec),
					// once before the round measured, so that the prev of
					// the round's writes holds a previous_spec of its own.
					apiUpdate := func(tx WriteTx, cur *shoalv1.Service, i, round int) error {
						data, err := proto.Marshal(cur.GetSpec())
						if err != nil {
							return err
						}
						spec := new(shoalv1.ServiceSpec)
						if err := proto.Unmarshal(data, spec); err != nil {
							return err
						}
						spec.Task.Container.Env = env(i, round)
						return tx.Update(&shoalv1.Service{Meta: &shoalv1.Meta{Id: cur.GetMeta().GetId(), Version: cur.GetMeta().GetVersion()},
							Spec: spec, PreviousSpec: cur.GetSpec(), SpecVersion: cur.GetSpecVersion() + 1})
					}
					if write == "api" {
						for i := range services {
							mustUpdate(b, s, func(tx WriteTx) error {
								cur, _ := Get[*shoalv1.Service](tx, fmt.Sprintf("s%04d", i))
								return apiUpdate(tx, cur, i, 1)
							})
						}
					}
					// Every service updated once, after the ring has let
					// go of their earlier writes.
					s.hub.mu.Lock()
					s.hub.dropLocked(len(s.hub.ring))
					s.hub.mu.Unlock()
					sub, err := s.Watch(context.Background(), 0) // holds the ring (no trim)
					if err != nil {
						b.Fatal(err)
					}
					for i := range services {
						id := fmt.Sprintf("s%04d", i)
						mustUpdate(b, s, func(tx WriteTx) error {
							cur, _ := Get[*shoalv1.Service](tx, id)
							if write == "api" {
								return apiUpdate(tx, cur, i, 2)
							}
							if write == "patch" {
								svc := &shoalv1.Service{Meta: &shoalv1.Meta{Id: id, Version: cur.GetMeta().GetVersion()}, PreviousSpec: cur.GetSpec()}
								return tx.PatchService(svc, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"k": "v"}})
							}
							svc := proto.Clone(cur).(*shoalv1.Service)
							svc.UpdateStatus = &shoalv1.UpdateStatus{State: shoalv1.UpdateState_UPDATE_STATE_UPDATING}
							return tx.Update(svc)
						})
					}
					held := liveHeap
					with := held()
					s.hub.mu.Lock()
					n := 0
					for i := range s.hub.ring {
						if s.hub.ring[i].prev != nil {
							n++
						}
						s.hub.ring[i].prev = nil
					}
					s.hub.mu.Unlock()
					without := held()
					if n != services {
						b.Fatalf("%d prevs in the ring, want %d", n, services)
					}
					b.ReportMetric(float64(int64(with)-int64(without))/float64(n), "prev-B/event")
					b.ReportMetric(float64(int64(with)-int64(without))/(1<<20)*float64(defaultWatchRing)/float64(n), "MiB/full-ring")
					runtime.KeepAlive(sub)
					sub.Close()
				}
			})
		}
	}
}
