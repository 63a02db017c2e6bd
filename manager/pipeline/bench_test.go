package pipeline_test

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/shoal-dev/shoal/client"
	"github.com/shoal-dev/shoal/manager/pipeline"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
	"github.com/shoal-dev/shoal/trust/trusttest"
)

// benchControl answers PatchService at once: what is measured is the
// transport, both sides, not a write.
type benchControl struct {
	shoalv1.UnimplementedControlServer
}

func (benchControl) PatchService(_ context.Context, req *shoalv1.PatchServiceRequest) (*shoalv1.PatchServiceResponse, error) {
	return &shoalv1.PatchServiceResponse{Service: &shoalv1.Service{Meta: &shoalv1.Meta{Id: req.GetServiceId(), Version: 7}}}, nil
}

// BenchmarkPatchServiceTransport is one PatchService through shoal's Go
// client to a gRPC server with mutual TLS, as a unary call (the client
// sends calls carrying outgoing metadata unary) and over the pipeline,
// at 1, 16 and 256 callers. The handler does nothing; an interceptor
// stands for the manager's chain. cpu-µs/op is the process's CPU (client
// and server: both run here) per call.
//
//	go test -tags seccomp -run '^$' -bench PatchServiceTransport -benchtime 20000x ./manager/pipeline/
func BenchmarkPatchServiceTransport(b *testing.B) {
	root := trusttest.NewRoot(b)
	srvCerts := trusttest.NodeCerts(b, root, "m1", trust.RoleManager)
	certPEM, keyPEM, err := root.IssueAdmin("admin1", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	admin, err := trust.NewCertStore(&trust.Creds{CACertPEM: root.CertPEM(), CertPEM: certPEM, KeyPEM: keyPEM})
	if err != nil {
		b.Fatal(err)
	}
	pass := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		return h(ctx, req)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(srvCerts.ServerTLSConfig())), grpc.ChainUnaryInterceptor(pass),
		grpc.NumStreamWorkers(2))
	pipe := &pipeline.Server{Unary: []grpc.UnaryServerInterceptor{pass}}
	shoalv1.RegisterControlServer(srv, benchControl{})
	shoalv1.RegisterControlServer(pipe, benchControl{})
	shoalv1.RegisterPipelineServer(srv, pipe)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Stop()
	conn, err := client.DialHosts([]string{ln.Addr().String()}, trust.ClientCreds(admin))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ctl := shoalv1.NewControlClient(conn)
	for _, mode := range []string{"unary", "pipeline"} {
		for _, callers := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("%s/callers=%d", mode, callers), func(b *testing.B) {
				ctx := context.Background()
				if mode == "unary" {
					ctx = metadata.AppendToOutgoingContext(ctx, "x-bench", "unary")
				}
				call := func() {
					cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					defer cancel()
					if _, err := ctl.PatchService(cctx, &shoalv1.PatchServiceRequest{ServiceId: "s1", LabelsAdd: map[string]string{"bench": "v"}}); err != nil {
						b.Error(err)
					}
				}
				call() // the connection and the stream are up before timing
				cpu0 := processCPU()
				b.ResetTimer()
				b.SetParallelism(max(1, callers/runtime.GOMAXPROCS(0)))
				if callers == 1 {
					for range b.N {
						call()
					}
				} else {
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							call()
						}
					})
				}
				b.StopTimer()
				b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
			})
		}
	}
}

func processCPU() time.Duration {
	var r syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &r); err != nil {
		return 0
	}
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}
