package httpapi

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/errdefs"
	"github.com/shoal-dev/shoal/manager/controlapi"
	"github.com/shoal-dev/shoal/manager/transport"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
	"github.com/shoal-dev/shoal/trust/trusttest"
)

// BenchmarkHTTPvsGRPC compares the same calls made as gRPC (the CLI's way:
// TLS to the manager port) and as HTTP/JSON through the gateway (HTTPS,
// the gateway calling the same gRPC server in memory), on one manager
// with a real raft store (in-memory log) and the real control API and
// authorizer, both with the admin certificate, in one run:
//
//	go test -tags seccomp -run '^$' -bench HTTPvsGRPC -benchtime 2s ./manager/httpapi/
//
// ListServices lists 1,000 services; GetService reads one; UpdateService changes one service's
// label (one raft write each). Each call reports, for gRPC and HTTP, ops/s
// and p99 latency (ListServices with 4 concurrent callers, the others 1),
// measured in alternating chunks, and the ratio http/grpc of the rates.
func BenchmarkHTTPvsGRPC(b *testing.B) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, trans := raft.NewInmemTransport("solo:4242")
	st, err := raftstore.Open(raftstore.Config{NodeID: "solo", InMemory: true, Transport: trans, Bootstrap: true,
		HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond, Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for deadline := time.Now().Add(10 * time.Second); !st.IsLeader(); {
		if time.Now().After(deadline) {
			b.Fatal("no leader")
		}
		time.Sleep(5 * time.Millisecond)
	}
	ctx := context.Background()
	if _, err := st.Update(ctx, func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "c1"}, Name: "bench"})
	}); err != nil {
		b.Fatal(err)
	}
	ctl := controlapi.New(st, logger)
	var svcID string
	for i := range 1000 {
		resp, err := ctl.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: &shoalv1.ServiceSpec{Name: fmt.Sprintf("s%04d", i), Replicas: 0,
			Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo@sha256:" + strings.Repeat("a", 64)}}}})
		if err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			svcID = resp.GetService().GetMeta().GetId()
		}
	}

	root := trusttest.NewRoot(b)
	mgr := trusttest.NodeCerts(b, root, "m1", trust.RoleManager)
	acert, akey, err := root.IssueAdmin("ops", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	adminStore, err := trust.NewCertStore(&trust.Creds{CACertPEM: root.CertPEM(), CertPEM: acert, KeyPEM: akey})
	if err != nil {
		b.Fatal(err)
	}
	authz := &trust.Authorizer{Policy: trust.DefaultPolicy(), ClusterID: "c1"}
	unary := []grpc.UnaryServerInterceptor{errdefs.UnaryServerInterceptor(), authz.Unary()}
	srv := grpc.NewServer(grpc.Creds(transport.ServerCreds()),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(errdefs.StreamServerInterceptor(), authz.Stream()))
	direct := &Direct{Unary: unary}
	shoalv1.RegisterControlServer(Tee{srv, direct}, ctl)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	mux := transport.NewMux(ln, mgr.ServerTLSConfig(), logger)
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go mux.Serve(mctx)
	defer mux.Close()
	go srv.Serve(mux.GRPC())
	inproc := NewInProcessListener()
	go srv.Serve(inproc)
	defer srv.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(trust.ClientCreds(adminStore)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxReplyBytes)))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	gc := shoalv1.NewControlClient(conn)

	// web is the manager's HTTPS server; before is the gateway as it was
	// before Direct and appendJSON: every call over the in-process gRPC
	// connection, replies encoded by protojson.
	hs, err := New(mctx, Config{Certs: mgr, GRPC: inproc, Direct: direct, Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	iconn, err := grpc.NewClient("passthrough:///in-process", grpc.WithContextDialer(inproc.DialContext),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxReplyBytes)))
	if err != nil {
		b.Fatal(err)
	}
	defer iconn.Close()
	old := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, newJSONPb()),
		runtime.WithIncomingHeaderMatcher(incomingHeader), runtime.WithMetadata(clientCertMetadata))
	if err := shoalv1.RegisterControlHandler(mctx, old, iconn); err != nil {
		b.Fatal(err)
	}
	var webs [2]*httptest.Server
	for k, h := range []http.Handler{hs.Handler(), old} {
		webs[k] = httptest.NewUnstartedServer(h)
		webs[k].TLS = TLSConfig(mgr)
		webs[k].EnableHTTP2 = true
		webs[k].StartTLS()
		defer webs[k].Close()
	}
	web, before := webs[0], webs[1]
	pair, _ := tls.X509KeyPair(acert, akey)
	hc := &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 16,
		TLSClientConfig: &tls.Config{RootCAs: mgr.ClientTLSConfig(trust.ManagerServerName, "h2").RootCAs, ServerName: trust.ManagerServerName, Certificates: []tls.Certificate{pair}}}}
	httpDo := func(web *httptest.Server, method, path, body string) error {
		req, _ := http.NewRequest(method, web.URL+path, strings.NewReader(body))
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		n, _ := io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 || n == 0 {
			return fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
		}
		return nil
	}
	// UpdateService needs the current version: one writer per call kind
	// reads it back from the reply; the label makes every write a change.
	var verMu sync.Mutex // guards version
	var version uint64
	cur, _ := gc.GetService(ctx, &shoalv1.GetServiceRequest{Ref: svcID})
	version = cur.GetService().GetMeta().GetVersion()
	spec := cur.GetService().GetSpec()
	update := func(web *httptest.Server, n int) error {
		verMu.Lock()
		defer verMu.Unlock()
		s := spec
		s.Labels = map[string]string{"n": fmt.Sprint(n)}
		req := &shoalv1.UpdateServiceRequest{ServiceId: svcID, Version: version, Spec: s}
		if web == nil {
			resp, err := gc.UpdateService(ctx, req)
			if err != nil {
				return err
			}
			version = resp.GetService().GetMeta().GetVersion()
			return nil
		}
		body, _ := protojson.Marshal(req)
		hreq, _ := http.NewRequest("PATCH", web.URL+"/v1/services/"+svcID, strings.NewReader(string(body)))
		resp, err := hc.Do(hreq)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var out shoalv1.UpdateServiceResponse
		if err := protojson.Unmarshal(b, &out); err != nil || resp.StatusCode != 200 {
			return fmt.Errorf("HTTP %d %s", resp.StatusCode, b)
		}
		version = out.GetService().GetMeta().GetVersion()
		return nil
	}
	calls := []struct {
		name               string
		concurrency        int
		grpc, http, before func(i int) error
	}{
		{"ListServices1000", 4,
			func(int) error {
				r, err := gc.ListServices(ctx, &shoalv1.ListServicesRequest{})
				if err == nil && len(r.GetServices()) != 1000 {
					err = fmt.Errorf("%d services", len(r.GetServices()))
				}
				return err
			},
			func(int) error { return httpDo(web, "GET", "/v1/services", "") },
			func(int) error { return httpDo(before, "GET", "/v1/services", "") }},
		{"GetService", 1, func(int) error { _, err := gc.GetService(ctx, &shoalv1.GetServiceRequest{Ref: svcID}); return err },
			func(int) error { return httpDo(web, "GET", "/v1/services/"+svcID, "") },
			func(int) error { return httpDo(before, "GET", "/v1/services/"+svcID, "") }},
		{"UpdateService", 1, func(i int) error { return update(nil, i) }, func(i int) error { return update(web, i) },
			func(i int) error { return update(before, i) }},
	}
	// The two ways of a call alternate in chunks, so that the machine's
	// other load falls on both alike; each reports its own rate and p99.
	const chunk = 20
	for _, c := range calls {
		b.Run(c.name, func(b *testing.B) {
			fns := [3]func(int) error{c.grpc, c.http, c.before}
			var lat [3][]time.Duration
			var busy [3]time.Duration
			for done := 0; done < b.N; done += chunk {
				n := min(chunk, b.N-done)
				for k, fn := range fns {
					var mu sync.Mutex // guards next and lat[k]
					next := 0
					var wg sync.WaitGroup
					start := time.Now()
					for range c.concurrency {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for {
								mu.Lock()
								i := next
								next++
								mu.Unlock()
								if i >= n {
									return
								}
								t0 := time.Now()
								if err := fn(done + i); err != nil {
									b.Error(err)
									return
								}
								d := time.Since(t0)
								mu.Lock()
								lat[k] = append(lat[k], d)
								mu.Unlock()
							}
						}()
					}
					wg.Wait()
					busy[k] += time.Since(start)
				}
			}
			var rate [3]float64
			for k, name := range []string{"grpc", "http", "before"} {
				if len(lat[k]) == 0 {
					return
				}
				slices.Sort(lat[k])
				rate[k] = float64(len(lat[k])) / busy[k].Seconds()
				b.ReportMetric(rate[k], name+"-ops/s")
				b.ReportMetric(float64(lat[k][len(lat[k])*99/100].Microseconds())/1000, name+"-p99-ms")
			}
			b.ReportMetric(rate[1]/rate[0], "http/grpc")
			b.ReportMetric(rate[2]/rate[0], "before/grpc")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkEncodeList encodes a reply of 1,000 services (as the control
// API lists them) with protojson and with appendJSON:
//
//	go test -tags seccomp -run '^$' -bench EncodeList ./manager/httpapi/
func BenchmarkEncodeList(b *testing.B) {
	resp := &shoalv1.ListServicesResponse{Total: 1000}
	for i := range 1000 {
		resp.Services = append(resp.Services, &shoalv1.Service{
			Meta: &shoalv1.Meta{Id: fmt.Sprintf("%025d", i), Version: uint64(i + 10), CreatedAt: timestamppb.Now(), UpdatedAt: timestamppb.Now()},
			Spec: &shoalv1.ServiceSpec{Name: fmt.Sprintf("s%04d", i), Labels: map[string]string{"team": "web", "tier": "front"},
				Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo@sha256:" + strings.Repeat("a", 64), Env: []string{"A=1", "B=2"}}}},
			SpecVersion: 3,
		})
	}
	b.Run("protojson", func(b *testing.B) {
		for b.Loop() {
			if _, err := protojson.Marshal(resp); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("appendJSON", func(b *testing.B) {
		for b.Loop() {
			if _, err := marshalJSON(newJSONPb().Marshal, resp); err != nil {
				b.Fatal(err)
			}
		}
	})
}
