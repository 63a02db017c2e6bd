package controlapi

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestPortConflict: a port published by one service is refused to another
// at create and at update (same number and protocol, either mode), naming
// the other service and storing nothing; the other protocol is fine; a
// service may keep its own port across an update; a removed service frees
// its port.
func TestPortConflict(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	if _, err := s.CreateNetwork(ctx, &shoalv1.CreateNetworkRequest{Spec: &shoalv1.NetworkSpec{Name: "app"}}); err != nil {
		t.Fatal(err)
	}
	spec := func(name string, ports ...*shoalv1.PortConfig) *shoalv1.ServiceSpec {
		return &shoalv1.ServiceSpec{Name: name, Replicas: 1,
			Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:latest"},
				Networks: []*shoalv1.NetworkAttachmentConfig{{Target: "app"}}},
			Endpoint: &shoalv1.EndpointSpec{Ports: ports}}
	}
	p := func(pub, target uint32, proto, mode string) *shoalv1.PortConfig {
		return &shoalv1.PortConfig{PublishedPort: pub, TargetPort: target, Protocol: proto, PublishMode: mode}
	}
	web, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec("web", p(8080, 80, "", ""))})
	if err != nil {
		t.Fatal(err)
	}
	webID := web.GetService().GetMeta().GetId()
	_, err = s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec("api", p(8080, 81, "tcp", "host"))})
	wantCode(t, err, codes.AlreadyExists, `spec.endpoint.ports[0].published_port: 8080/tcp is already published by service "web" (`+webID+`)`)
	if len(raftstore.List[*shoalv1.Service](st.View())) != 1 {
		t.Fatal("a refused service was stored")
	}
	// udp 8080 is another port.
	api, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec("api", p(8080, 53, "udp", ""))})
	if err != nil {
		t.Fatalf("udp on a tcp port: %v", err)
	}
	a := api.GetService()
	_, err = s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: a.GetMeta().GetId(), Version: a.GetMeta().GetVersion(),
		Spec: spec("api", p(8080, 53, "udp", ""), p(8080, 81, "tcp", ""))})
	wantCode(t, err, codes.AlreadyExists, `spec.endpoint.ports[1].published_port: 8080/tcp is already published by service "web"`)
	// web keeps its own port across an update.
	w := web.GetService()
	if _, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: webID, Version: w.GetMeta().GetVersion(),
		Spec: spec("web", p(8080, 8000, "", "host"))}); err != nil {
		t.Fatalf("update keeping its own port: %v", err)
	}
	if _, err := s.RemoveService(ctx, &shoalv1.RemoveServiceRequest{Ref: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: a.GetMeta().GetId(), IgnoreVersion: true,
		Spec: spec("api", p(8080, 53, "udp", ""), p(8080, 81, "tcp", ""))}); err != nil {
		t.Fatalf("port of a removed service: %v", err)
	}
}
