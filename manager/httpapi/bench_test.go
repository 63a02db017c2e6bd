package httpapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
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
//	go test -tags seccomp -run '^$' -bench HTTPvsGRPC -benchtime 500x ./manager/httpapi/
//
// (-args -httpapi.disk: the raft log on disk, fsync'd, as a manager's.)
//
// ListServices lists 1,000 services; GetService reads one; UpdateService changes one service's
// label (one raft write each). Each call reports, for gRPC and each HTTP
// way (wayNames), ops/s, p99 latency and the process's CPU time per call
// (ListServices with 4 concurrent callers, the others 1), measured in
// alternating chunks, and the ratio way/grpc of the rates.
func BenchmarkHTTPvsGRPC(b *testing.B) {
	env := newBenchEnv(b)
	// The ways of a call alternate in chunks, so that the machine's
	// other load falls on all alike; each reports its own rate and p99.
	const chunk = 20
	for _, c := range env.calls {
		b.Run(c.name, func(b *testing.B) {
			var lat [numWays][]time.Duration
			var busy, cpu [numWays]time.Duration
			for done := 0; done < b.N; done += chunk {
				n := min(chunk, b.N-done)
				for k, fn := range c.ways {
					cpu0 := processCPU(b)
					d, l := runClosed(b, fn, c.concurrency, done, n)
					cpu[k] += processCPU(b) - cpu0
					busy[k] += d
					lat[k] = append(lat[k], l...)
				}
			}
			var rate [numWays]float64
			for k, name := range wayNames {
				if len(lat[k]) == 0 {
					return
				}
				slices.Sort(lat[k])
				rate[k] = float64(len(lat[k])) / busy[k].Seconds()
				b.ReportMetric(rate[k], name+"-ops/s")
				b.ReportMetric(float64(lat[k][len(lat[k])*99/100].Microseconds())/1000, name+"-p99-ms")
				b.ReportMetric(float64(cpu[k].Microseconds())/float64(len(lat[k])), name+"-cpu-us/op")
			}
			for k, name := range wayNames[1:] {
				b.ReportMetric(rate[k+1]/rate[0], name+"/grpc")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkHTTPCall runs one way of one call alone (as
// BenchmarkHTTPCall/UpdateService/http), for a profile of that way only:
//
//	go test -tags seccomp -run '^$' -bench 'HTTPCall/UpdateService/http$' -benchtime 3000x -cpuprofile cpu.out ./manager/httpapi/
func BenchmarkHTTPCall(b *testing.B) {
	env := newBenchEnv(b)
	for _, c := range env.calls {
		b.Run(c.name, func(b *testing.B) {
			for k, name := range wayNames {
				b.Run(name, func(b *testing.B) {
					cpu0 := processCPU(b)
					d, _ := runClosed(b, c.ways[k], c.concurrency, 0, b.N)
					b.ReportMetric(float64(b.N)/d.Seconds(), "ops/s")
					b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-us/op")
				})
			}
		})
	}
}

// processCPU is the CPU time (user and system) the process has used:
// clients and servers all run in it, so the CPU a way's calls used is
// the difference across them, a figure the machine's other load (which
// slows the rates) hardly moves.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runClosed makes calls from..from+n-1 of fn with concurrency callers in
// a closed loop; it returns the time they took and each call's latency.
func runClosed(b *testing.B, fn func(int) error, concurrency, from, n int) (time.Duration, []time.Duration) {
	var mu sync.Mutex // guards next and lat
	next := 0
	lat := make([]time.Duration, 0, n)
	var wg sync.WaitGroup
	start := time.Now()
	for range concurrency {
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
				if err := fn(from + i); err != nil {
					b.Error(err)
					return
				}
				d := time.Since(t0)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return time.Since(start), lat
}

// The ways each call is made: gRPC; HTTP/JSON through the gateway over
// HTTP/2, one connection as gRPC's; the same over HTTP/1.1 keep-alive
// connections (one per concurrent caller); the same over HTTP/2 with a
// client encoding and decoding with protojson (httppj) instead of this
// package's codec; and, over HTTP/2 with a protojson client, the gateway
// as it was before unmarshalJSON (prev: request bodies by encoding/json
// and protojson).
const numWays = 5

var wayNames = [numWays]string{"grpc", "http", "http1", "httppj", "prev"}

// prevMarshaler is the gateway's marshaler with runtime.JSONPb's body
// decoder, as before unmarshalJSON (the benchmark's prev).
type prevMarshaler struct{ *ndjson }

func (m prevMarshaler) NewDecoder(r io.Reader) runtime.Decoder { return m.JSONPb.NewDecoder(r) }

// benchCall is one call of the benchmark, made each way.
type benchCall struct {
	name        string
	concurrency int
	ways        [numWays]func(i int) error
}

type benchEnv struct {
	calls []benchCall
}

// benchDisk puts the benchmark's raft log on disk (bbolt, fsync'd), as a
// manager's: an UpdateService then waits for the same commit on every way.
var benchDisk = flag.Bool("httpapi.disk", false, "benchmarks: the raft log on disk (fsync) instead of in memory")

// newBenchEnv starts one manager's worth of servers (raft store with
// 1,000 services, control API, authorizer, gRPC on TLS, the HTTPS
// gateway) and the clients of each way, all stopped when b ends.
func newBenchEnv(b *testing.B) *benchEnv {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, trans := raft.NewInmemTransport("solo:4242")
	cfg := raftstore.Config{NodeID: "solo", InMemory: true, Transport: trans, Bootstrap: true,
		HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond, Logger: logger}
	if *benchDisk {
		cfg.InMemory, cfg.DataDir = false, b.TempDir()
	}
	st, err := raftstore.Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
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
	b.Cleanup(cancel)
	go mux.Serve(mctx)
	b.Cleanup(func() { mux.Close() })
	go srv.Serve(mux.GRPC())
	inproc := NewInProcessListener()
	go srv.Serve(inproc)
	b.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(trust.ClientCreds(adminStore)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxReplyBytes)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	gc := shoalv1.NewControlClient(conn)

	// web is the manager's HTTPS server; prev is its gateway as it was
	// before unmarshalJSON: a body scanned by encoding/json into a
	// json.RawMessage, then decoded by protojson (runtime.JSONPb).
	hs, err := New(mctx, Config{Certs: mgr, GRPC: inproc, Direct: direct, Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	prevMux := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, prevMarshaler{&ndjson{newJSONPb()}}),
		runtime.WithIncomingHeaderMatcher(incomingHeader), runtime.WithMetadata(clientCertMetadata))
	if err := shoalv1.RegisterControlHandlerClient(mctx, prevMux, shoalv1.NewControlClient(direct)); err != nil {
		b.Fatal(err)
	}
	prev := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		if r.TLS != nil {
			r = r.WithContext(withTLSState(r.Context(), r.TLS))
		}
		prevMux.ServeHTTP(w, r)
	})
	var webs [2]*httptest.Server
	for k, h := range []http.Handler{hs.Handler(), prev} {
		webs[k] = httptest.NewUnstartedServer(h)
		webs[k].TLS = TLSConfig(mgr)
		webs[k].EnableHTTP2 = true
		webs[k].StartTLS()
		b.Cleanup(webs[k].Close)
	}
	pair, _ := tls.X509KeyPair(acert, akey)
	// Clients reuse their connections, as real ones do: HTTP/2 multiplexes
	// every call on one; HTTP/1.1 keeps up to 16 idle ones (one per
	// concurrent caller here).
	tlsConf := func(proto string) *tls.Config {
		return &tls.Config{RootCAs: mgr.ClientTLSConfig(trust.ManagerServerName, "h2").RootCAs, ServerName: trust.ManagerServerName,
			Certificates: []tls.Certificate{pair}, NextProtos: []string{proto}}
	}
	h2 := &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 16, TLSClientConfig: tlsConf("h2")}}
	h1 := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, TLSClientConfig: tlsConf("http/1.1"),
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	b.Cleanup(h2.CloseIdleConnections)
	b.Cleanup(h1.CloseIdleConnections)
	// Each HTTP way's client encodes its body and decodes the reply into
	// the call's message, as the gRPC client does with protobuf: with
	// this package's codec (appendJSON, unmarshalJSON: protojson's JSON,
	// faster), or with protojson.
	type client struct {
		hc  *http.Client
		url string
		enc func(proto.Message) ([]byte, error)
		dec func([]byte, proto.Message) error
	}
	fastEnc := func(m proto.Message) ([]byte, error) { return marshalJSON(newJSONPb().Marshal, m) }
	clients := [numWays - 1]client{
		{h2, webs[0].URL, fastEnc, unmarshalJSON},
		{h1, webs[0].URL, fastEnc, unmarshalJSON},
		{h2, webs[0].URL, protojson.Marshal, protojson.Unmarshal},
		{h2, webs[1].URL, protojson.Marshal, protojson.Unmarshal},
	}
	httpDo := func(c client, method, path string, body, reply proto.Message) error {
		var rd io.Reader
		if body != nil {
			b, err := c.enc(body)
			if err != nil {
				return err
			}
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, c.url+path, rd)
		resp, err := c.hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s %s: HTTP %d %s", method, path, resp.StatusCode, b)
		}
		if resp.ProtoMajor != map[bool]int{true: 2, false: 1}[c.hc == h2] {
			return fmt.Errorf("%s %s: %s", method, path, resp.Proto)
		}
		return c.dec(b, reply)
	}
	// UpdateService needs the current version: one writer per call kind
	// reads it back from the reply; the label makes every write a change.
	var verMu sync.Mutex // guards version
	var version uint64
	cur, _ := gc.GetService(ctx, &shoalv1.GetServiceRequest{Ref: svcID})
	version = cur.GetService().GetMeta().GetVersion()
	spec := cur.GetService().GetSpec()
	update := func(c *client, n int) error {
		verMu.Lock()
		defer verMu.Unlock()
		s := spec
		s.Labels = map[string]string{"n": fmt.Sprint(n)}
		req := &shoalv1.UpdateServiceRequest{ServiceId: svcID, Version: version, Spec: s}
		var out *shoalv1.UpdateServiceResponse
		if c == nil {
			var err error
			if out, err = gc.UpdateService(ctx, req); err != nil {
				return err
			}
		} else {
			out = &shoalv1.UpdateServiceResponse{}
			if err := httpDo(*c, "PATCH", "/v1/services/"+svcID, req, out); err != nil {
				return err
			}
		}
		version = out.GetService().GetMeta().GetVersion()
		return nil
	}
	listed := func(r *shoalv1.ListServicesResponse, err error) error {
		if err == nil && len(r.GetServices()) != 1000 {
			err = fmt.Errorf("%d services", len(r.GetServices()))
		}
		return err
	}
	ways := func(grpc func(int) error, http func(c client, i int) error) [numWays]func(int) error {
		w := [numWays]func(int) error{grpc}
		for k, c := range clients {
			w[k+1] = func(i int) error { return http(c, i) }
		}
		return w
	}
	return &benchEnv{calls: []benchCall{
		{"ListServices1000", 4, ways(
			func(int) error {
				return listed(gc.ListServices(ctx, &shoalv1.ListServicesRequest{Page: &shoalv1.Page{PageSize: 1000}}))
			},
			func(c client, _ int) error {
				var r shoalv1.ListServicesResponse
				if err := httpDo(c, "GET", "/v1/services?page.page_size=1000", nil, &r); err != nil {
					return err
				}
				return listed(&r, nil)
			})},
		{"GetService", 1, ways(
			func(int) error { _, err := gc.GetService(ctx, &shoalv1.GetServiceRequest{Ref: svcID}); return err },
			func(c client, _ int) error {
				return httpDo(c, "GET", "/v1/services/"+svcID, nil, &shoalv1.GetServiceResponse{})
			})},
		{"UpdateService", 1, ways(
			func(i int) error { return update(nil, i) },
			func(c client, i int) error { return update(&c, i) })},
	}}
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

// BenchmarkDecode decodes an UpdateService body, a reply of one service
// (as the control API returns it) and a list of 1,000 such with
// protojson, with unmarshalJSON, and, for scale, the same messages from
// protobuf:
//
//	go test -tags seccomp -run '^$' -bench 'Decode$' -benchmem ./manager/httpapi/
func BenchmarkDecode(b *testing.B) {
	svc := &shoalv1.Service{
		Meta: &shoalv1.Meta{Id: strings.Repeat("q", 25), Version: 1005, CreatedAt: timestamppb.Now(), UpdatedAt: timestamppb.Now()},
		Spec: &shoalv1.ServiceSpec{Name: "s0000", Labels: map[string]string{"n": "0"},
			Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo@sha256:" + strings.Repeat("a", 64), StopGraceMs: 10000},
				Restart: &shoalv1.RestartPolicy{DelayMs: 5000}},
			Update:   &shoalv1.UpdateConfig{Parallelism: 1, FailureAction: "pause", Order: "stop-first", MonitorMs: 5000},
			Rollback: &shoalv1.UpdateConfig{Parallelism: 1, FailureAction: "pause", Order: "stop-first", MonitorMs: 5000}},
		SpecVersion: 1,
	}
	svc.PreviousSpec = proto.Clone(svc.Spec).(*shoalv1.ServiceSpec)
	list := &shoalv1.ListServicesResponse{Total: 1000}
	for range 1000 {
		list.Services = append(list.Services, svc)
	}
	for _, m := range []proto.Message{
		&shoalv1.UpdateServiceRequest{ServiceId: svc.Meta.Id, Version: 5, Spec: svc.Spec},
		&shoalv1.UpdateServiceResponse{Service: svc},
		list,
	} {
		js, _ := protojson.Marshal(m)
		pb, _ := proto.Marshal(m)
		name := string(m.ProtoReflect().Descriptor().Name())
		for _, d := range []struct {
			name string
			in   []byte
			dec  func([]byte, proto.Message) error
		}{{"protojson", js, protojson.Unmarshal}, {"unmarshalJSON", js, unmarshalJSON}, {"protobuf", pb, proto.Unmarshal}} {
			b.Run(name+"/"+d.name, func(b *testing.B) {
				out := m.ProtoReflect().New().Interface()
				for b.Loop() {
					if err := d.dec(d.in, out); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// benchControl answers GetService, UpdateService and ListServices with
// fixed replies, for BenchmarkGateway.
type benchControl struct {
	shoalv1.UnimplementedControlServer
	svc *shoalv1.Service
}

func (c *benchControl) GetService(context.Context, *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error) {
	return &shoalv1.GetServiceResponse{Service: c.svc}, nil
}

func (c *benchControl) UpdateService(_ context.Context, req *shoalv1.UpdateServiceRequest) (*shoalv1.UpdateServiceResponse, error) {
	return &shoalv1.UpdateServiceResponse{Service: c.svc}, nil
}

func (c *benchControl) ListServices(context.Context, *shoalv1.ListServicesRequest) (*shoalv1.ListServicesResponse, error) {
	return &shoalv1.ListServicesResponse{Services: []*shoalv1.Service{c.svc}, Total: 1}, nil
}

// BenchmarkGateway is the gateway's own cost per call, without network,
// TLS, authorizer or store: the handler Gateway returns, over Direct
// (no interceptors) and a control API with fixed replies, called with a
// recorder in the benchmark's goroutine:
//
//	go test -tags seccomp -run '^$' -bench Gateway -benchmem ./manager/httpapi/
func BenchmarkGateway(b *testing.B) {
	svc := &shoalv1.Service{Meta: &shoalv1.Meta{Id: strings.Repeat("q", 25), Version: 7, CreatedAt: timestamppb.Now()},
		Spec: &shoalv1.ServiceSpec{Name: "web", Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo"}}}}
	direct := &Direct{}
	shoalv1.RegisterControlServer(direct, &benchControl{svc: svc})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gw, err := Gateway(ctx, direct)
	if err != nil {
		b.Fatal(err)
	}
	body, _ := protojson.Marshal(&shoalv1.UpdateServiceRequest{Version: 7, Spec: svc.Spec})
	for _, c := range []struct{ name, method, path, body string }{
		{"GetService", "GET", "/v1/services/" + svc.Meta.Id, ""},
		{"UpdateService", "PATCH", "/v1/services/" + svc.Meta.Id, string(body)},
		{"ListServices", "GET", "/v1/services?filters[name]=web", ""},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
				r.Header.Set("Authorization", "Bearer x")
				w := httptest.NewRecorder()
				gw.ServeHTTP(w, r)
				if w.Code != 200 {
					b.Fatalf("%s: HTTP %d %s", c.name, w.Code, w.Body)
				}
			}
		})
	}
}
