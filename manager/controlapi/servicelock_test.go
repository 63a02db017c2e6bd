package controlapi

import (
	"context"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestServiceWriteLock: only a service write that joins networks or
// publishes ports is serialised with netMu; the others go ahead (so raft
// can batch concurrent updates).
func TestServiceWriteLock(t *testing.T) {
	s, _ := newServer(t)
	plain := &shoalv1.ServiceSpec{Name: "plain", Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:latest"}}}
	tests := []struct {
		name string
		spec *shoalv1.ServiceSpec
		lock bool
	}{
		{"no networks, no ports", plain, false},
		{"target port only", &shoalv1.ServiceSpec{Endpoint: &shoalv1.EndpointSpec{Ports: []*shoalv1.PortConfig{{TargetPort: 80}}}}, false},
		{"published port", &shoalv1.ServiceSpec{Endpoint: &shoalv1.EndpointSpec{Ports: []*shoalv1.PortConfig{{TargetPort: 80, PublishedPort: 8080}}}}, true},
		{"network", &shoalv1.ServiceSpec{Task: &shoalv1.TaskSpec{Networks: []*shoalv1.NetworkAttachmentConfig{{Target: "app"}}}}, true},
		{"nil spec", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unlock := s.lockServiceWrite(tt.spec)
			free := s.netMu.TryLock()
			if free {
				s.netMu.Unlock()
			}
			unlock()
			if free == tt.lock {
				t.Errorf("netMu held: %v, want %v", !free, tt.lock)
			}
		})
	}

	// While a network write holds netMu, a plain service is still created
	// and updated.
	s.netMu.Lock()
	locked := true
	defer func() {
		if locked {
			s.netMu.Unlock()
		}
	}()
	done := make(chan error, 1)
	go func() {
		ctx := context.Background()
		created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: plain})
		if err == nil {
			svc := created.GetService()
			_, err = s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{
				ServiceId: svc.GetMeta().GetId(), Version: svc.GetMeta().GetVersion(), Spec: plain})
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a service write without networks or ports waited for netMu")
	}
	locked = false
	s.netMu.Unlock()
}
