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
		for _, write := range []string{"patch", "whole"} {
			b.Run(fmt.Sprintf("env=%dKiB/%s", envBytes>>10, write), func(b *testing.B) {
				for b.Loop() {
					s := single(b, options{})
					env := []string{"BIG=" + strings.Repeat("x", envBytes)}
					for i := 0; i < services; i += 100 {
						mustUpdate(b, s, func(tx WriteTx) error {
							for j := i; j < i+100; j++ {
								svc := mkService(fmt.Sprintf("s%04d", j), fmt.Sprintf("web%04d", j))
								svc.Spec.Task = &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo", Env: env}}
								if err := tx.Create(svc); err != nil {
									return err
								}
							}
							return nil
						})
					}
					// Every service updated once, after the ring has let
					// go of their creations.
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
							if write == "patch" {
								svc := &shoalv1.Service{Meta: &shoalv1.Meta{Id: id, Version: cur.GetMeta().GetVersion()}, PreviousSpec: cur.GetSpec()}
								return tx.PatchService(svc, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"k": "v"}})
							}
							svc := proto.Clone(cur).(*shoalv1.Service)
							svc.UpdateStatus = &shoalv1.UpdateStatus{State: shoalv1.UpdateState_UPDATE_STATE_UPDATING}
							return tx.Update(svc)
						})
					}
					held := func() uint64 {
						var m runtime.MemStats
						runtime.GC()
						runtime.GC()
						runtime.ReadMemStats(&m)
						return m.HeapAlloc
					}
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
