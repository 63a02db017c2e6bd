package httpapi

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/errdefs"
	"github.com/shoal-dev/shoal/manager/transport"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
	"github.com/shoal-dev/shoal/trust/trusttest"
)

// fakeControl answers GetService with the error class its ref names, and
// streams one Watch event, then reports when its caller went away.
type fakeControl struct {
	shoalv1.UnimplementedControlServer
	watchEnded chan error
	// listed gets, for each ListServices that reached the handler, what
	// the handler saw of its call.
	listed chan seen
}

// seen is what a handler saw of its call's context.
type seen struct {
	identity   trust.Identity
	named      bool
	incoming   metadata.MD
	outgoing   metadata.MD
	fullMethod string
	peer       string // the peer's AuthType
}

var classes = map[string]error{
	"invalid":    errdefs.InvalidArgumentf("spec.task.container.image: required"),
	"unauth":     errdefs.Unauthenticatedf("who are you"),
	"denied":     errdefs.PermissionDeniedf("no"),
	"missing":    errdefs.NotFoundf("service %q: not found", "missing"),
	"exists":     errdefs.AlreadyExistsf("service %q exists", "exists"),
	"stale":      errdefs.Conflictf("version 3 is stale"),
	"precond":    errdefs.FailedPreconditionf("the cluster is still being bootstrapped"),
	"noleader":   errdefs.NoQuorumf("no raft leader elected"),
	"unavailble": errdefs.Unavailablef("leader unreachable"),
}

func (f *fakeControl) GetService(ctx context.Context, req *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error) {
	_ = grpc.SetHeader(ctx, metadata.Pairs("shoal-raft-term", "5"))
	if err, ok := classes[req.GetRef()]; ok {
		return nil, err
	}
	return &shoalv1.GetServiceResponse{Service: &shoalv1.Service{Meta: &shoalv1.Meta{Id: req.GetRef()}}}, nil
}

func (f *fakeControl) CreateService(_ context.Context, req *shoalv1.CreateServiceRequest) (*shoalv1.CreateServiceResponse, error) {
	return &shoalv1.CreateServiceResponse{Service: &shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1"}, Spec: req.GetSpec()}}, nil
}

func (f *fakeControl) ListServices(ctx context.Context, _ *shoalv1.ListServicesRequest) (*shoalv1.ListServicesResponse, error) {
	var s seen
	s.identity, s.named = trust.IdentityFrom(ctx)
	s.incoming, _ = metadata.FromIncomingContext(ctx)
	s.outgoing, _ = metadata.FromOutgoingContext(ctx)
	s.fullMethod, _ = grpc.Method(ctx)
	if p, ok := peer.FromContext(ctx); ok {
		s.peer = p.AuthInfo.AuthType()
	}
	select {
	case f.listed <- s:
	default:
	}
	return &shoalv1.ListServicesResponse{Total: 0}, nil
}

func (f *fakeControl) Watch(req *shoalv1.WatchRequest, stream shoalv1.Control_WatchServer) error {
	switch {
	case slices.Contains(req.GetKinds(), "bogus"):
		// Refused before any header: trailers only.
		return errdefs.InvalidArgumentf("kinds: unknown kind %q", "bogus")
	case req.GetFromIndex() == quietIndex:
		// Accepted, and nothing happens.
		if err := stream.SendHeader(metadata.MD{}); err != nil {
			return err
		}
		<-stream.Context().Done()
		return nil
	}
	if err := stream.Send(&shoalv1.WatchEvent{Index: 7, Action: shoalv1.WatchAction_WATCH_ACTION_CREATE}); err != nil {
		return err
	}
	<-stream.Context().Done()
	f.watchEnded <- stream.Context().Err()
	return nil
}

type fixture struct {
	url              string
	ca               *x509.CertPool
	admin, worker    tls.Certificate
	viewer, operator string
	fake             *fakeControl
	newClient        func(cert *tls.Certificate) *http.Client
	revoke           func(name string)
}

func certOf(t *testing.T, s *trust.CertStore) tls.Certificate {
	c := s.Creds()
	pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// setup runs a gRPC server with the manager's authorizer (tokens and
// certificates) and transport credentials, and the HTTPS server over it,
// with unary calls made directly (Direct), as a manager does.
func setup(t *testing.T, origins ...string) *fixture {
	t.Helper()
	return setupVia(t, true, origins...)
}

// setupVia is setup with unary calls made directly or, !direct, over the
// in-process gRPC connection.
func setupVia(t *testing.T, direct bool, origins ...string) *fixture {
	t.Helper()
	root := trusttest.NewRoot(t)
	mgr := trusttest.NodeCerts(t, root, "m1", trust.RoleManager)
	f := &fixture{fake: &fakeControl{watchEnded: make(chan error, 4), listed: make(chan seen, 16)}}
	acert, akey, err := root.IssueAdmin("ops", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if f.admin, err = tls.X509KeyPair(acert, akey); err != nil {
		t.Fatal(err)
	}
	f.worker = certOf(t, trusttest.NodeCerts(t, root, "w1", trust.RoleWorker))
	var tokens []*shoalv1.ApiToken
	for _, role := range []string{"viewer", "operator"} {
		id, _ := trust.NewTokenID()
		tok, hash, err := trust.NewAPIToken(id)
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, &shoalv1.ApiToken{Id: id, Name: role, Role: role, SecretHash: hash})
		if role == "viewer" {
			f.viewer = tok
		} else {
			f.operator = tok
		}
	}
	revoked := make(chan string, 4)
	f.revoke = func(name string) { revoked <- name }
	authz := &trust.Authorizer{Policy: trust.DefaultPolicy(), ClusterID: "c1", Recheck: 20 * time.Millisecond,
		Tokens: func(_ context.Context, tok string) (trust.Identity, error) {
			for {
				select {
				case name := <-revoked:
					for _, tt := range tokens {
						if tt.GetName() == name {
							tt.Revoked = true
						}
					}
					continue
				default:
				}
				return trust.VerifyAPIToken(tokens, "c1", tok, time.Now())
			}
		}}
	unary := []grpc.UnaryServerInterceptor{errdefs.UnaryServerInterceptor(), authz.Unary()}
	srv := grpc.NewServer(grpc.Creds(transport.ServerCreds()),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(errdefs.StreamServerInterceptor(), authz.Stream()))
	var dc *Direct
	reg := Tee{srv}
	if direct {
		dc = &Direct{Unary: unary}
		reg = append(reg, dc)
	}
	shoalv1.RegisterControlServer(reg, f.fake)
	inproc := NewInProcessListener()
	go srv.Serve(inproc)
	t.Cleanup(srv.Stop)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := New(ctx, Config{Certs: mgr, GRPC: inproc, Direct: dc, CORSOrigins: origins, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "shoal_tasks{service=\"web\"} 1\n") })})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(s.Handler())
	hs.TLS = TLSConfig(mgr)
	hs.EnableHTTP2 = true
	hs.StartTLS()
	t.Cleanup(hs.Close)
	f.url = hs.URL
	f.ca = x509.NewCertPool()
	f.ca.AppendCertsFromPEM(root.CertPEM())
	f.newClient = func(cert *tls.Certificate) *http.Client {
		conf := &tls.Config{RootCAs: f.ca, ServerName: trust.ManagerServerName}
		if cert != nil {
			conf.Certificates = []tls.Certificate{*cert}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true}}
	}
	return f
}

func do(t *testing.T, c *http.Client, method, url, token, body string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestErrorClassesToHTTP: each error class reaches an HTTP client with
// its status, and the body is {"code", "message"} with the message kept
// (field paths included).
func TestErrorClassesToHTTP(t *testing.T) {
	want := map[string]int{
		"invalid": 400, "unauth": 401, "denied": 403, "missing": 404, "exists": 409,
		"stale": 409, "precond": 400, "noleader": 503, "unavailble": 503,
	}
	for name, err := range classes {
		if got := runtime.HTTPStatusFromCode(status.Code(errdefs.ToGRPC(err))); got != want[name] {
			t.Errorf("%s: HTTP %d, want %d", name, got, want[name])
		}
	}
	f := setup(t)
	c := f.newClient(&f.admin)
	for name, code := range want {
		got, body, _ := do(t, c, "GET", f.url+"/v1/services/"+name, "", "")
		var e struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil || got != code || e.Message != status.Convert(errdefs.ToGRPC(classes[name])).Message() {
			t.Errorf("%s: HTTP %d %s, want %d", name, got, body, code)
		}
	}
}

// TestAuthentication: the gateway carries the caller's certificate or
// token to the authorizer; nothing else authenticates, a forged metadata
// header included.
func TestAuthentication(t *testing.T) {
	for _, direct := range []bool{true, false} {
		t.Run(map[bool]string{true: "direct", false: "grpc"}[direct], func(t *testing.T) { testAuthentication(t, setupVia(t, direct)) })
	}
}

func testAuthentication(t *testing.T, f *fixture) {
	anon := f.newClient(nil)
	for _, tc := range []struct {
		name   string
		client *http.Client
		method string
		path   string
		token  string
		body   string
		hdr    []string
		want   int
	}{
		{"nothing", anon, "GET", "/v1/services", "", "", nil, 401},
		{"admin cert", f.newClient(&f.admin), "GET", "/v1/services", "", "", nil, 200},
		{"worker cert", f.newClient(&f.worker), "GET", "/v1/services", "", "", nil, 403},
		{"viewer reads", anon, "GET", "/v1/services", f.viewer, "", nil, 200},
		{"viewer writes", anon, "POST", "/v1/services", f.viewer, `{"spec":{"name":"web"}}`, nil, 403},
		{"operator writes", anon, "POST", "/v1/services", f.operator, `{"spec":{"name":"web"}}`, nil, 200},
		{"operator makes tokens", anon, "POST", "/v1/tokens", f.operator, `{"name":"x","role":"admin"}`, nil, 403},
		{"wrong token", anon, "GET", "/v1/services", wrongToken(f.viewer), "", nil, 401},
		{"malformed token", anon, "GET", "/v1/services", "hello", "", nil, 401},
		{"forged cert metadata", anon, "GET", "/v1/services", "", "", []string{"Grpc-Metadata-" + trust.MDClientCert, "x"}, 401},
		{"forged forwarding", f.newClient(&f.worker), "GET", "/v1/services", "", "", []string{"Grpc-Metadata-Shoal-Forwarded-For", "ops/admin/c1"}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, body, _ := do(t, tc.client, tc.method, f.url+tc.path, tc.token, tc.body, tc.hdr...)
			if got != tc.want {
				t.Fatalf("HTTP %d %s, want %d", got, body, tc.want)
			}
			if tc.token != "" && len(tc.token) > 20 && strings.Contains(body, tc.token[20:]) {
				t.Fatalf("the reply repeats the token's secret: %s", body)
			}
		})
	}
}

// wrongToken changes one character inside tok's secret (the last one
// would not do: it may already be the replacement, or carry only padding
// bits).
func wrongToken(tok string) string {
	b := []byte(tok)
	i := len(b) - 5
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// TestUnknownFieldNamed: a body with an unknown field is a 400 naming it.
func TestUnknownFieldNamed(t *testing.T) {
	f := setup(t)
	code, body, _ := do(t, f.newClient(&f.admin), "POST", f.url+"/v1/services", "", `{"spec":{"name":"web","replicaz":3}}`)
	if code != 400 || !strings.Contains(body, `replicaz`) {
		t.Fatalf("HTTP %d %s", code, body)
	}
	code, body, _ = do(t, f.newClient(&f.admin), "POST", f.url+"/v1/services", "", `{"spec":`)
	if code != 400 {
		t.Fatalf("truncated JSON: HTTP %d %s", code, body)
	}
}

// TestBodyBounded: a body above maxBodyBytes is refused, not read whole
// into a call.
func TestBodyBounded(t *testing.T) {
	f := setup(t)
	big := `{"spec":{"name":"` + strings.Repeat("x", maxBodyBytes) + `"}}`
	code, body, _ := do(t, f.newClient(&f.admin), "POST", f.url+"/v1/services", "", big)
	if code != 400 || !strings.Contains(body, "too large") {
		t.Fatalf("HTTP %d %.200s", code, body)
	}
}

// TestWatchStreams: /v1/events is NDJSON ({"result": ...} per line) or
// SSE with Accept: text/event-stream, and a client hanging up ends the
// gRPC stream.
func TestWatchStreams(t *testing.T) {
	f := setup(t)
	c := f.newClient(&f.admin)
	for _, tc := range []struct {
		accept, ctype, prefix string
	}{
		{"", "application/x-ndjson", `{"result":`},
		{"text/event-stream", "text/event-stream", `data: {"result":`},
	} {
		t.Run(tc.ctype, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", f.url+"/v1/events?fromIndex=1", nil)
			if tc.accept != "" {
				req.Header.Set("Accept", tc.accept)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tc.ctype {
				t.Fatalf("HTTP %d, %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			line, err := bufio.NewReader(resp.Body).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, tc.prefix) || !strings.Contains(line, `"index":"7"`) {
				t.Fatalf("first line %q, %v", line, err)
			}
			cancel()
			select {
			case err := <-f.fake.watchEnded:
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("watch ended with %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the gRPC stream outlived its HTTP client")
			}
		})
	}
}

// quietIndex asks fakeControl's Watch for a stream that sends its headers
// and then nothing.
const quietIndex = 99

// TestStreamHeadersAtOnce: a stream the server accepted answers 200 with
// its Content-Type before its first message (a quiet watch is "live" on a
// dashboard at once), and one refused before its headers keeps its HTTP
// error status.
func TestStreamHeadersAtOnce(t *testing.T) {
	f := setup(t)
	c := f.newClient(&f.admin)
	for _, tc := range []struct{ accept, ctype string }{
		{"", "application/x-ndjson"},
		{"text/event-stream", "text/event-stream"},
	} {
		t.Run(tc.ctype, func(t *testing.T) {
			// Without the headers flushed, Do would wait for the first
			// event, which never comes, until this deadline.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/v1/events?fromIndex=%d", f.url, quietIndex), nil)
			if tc.accept != "" {
				req.Header.Set("Accept", tc.accept)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("no headers before the deadline: %v", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tc.ctype {
				t.Fatalf("HTTP %d, %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
		})
	}
	code, body, _ := do(t, c, "GET", f.url+"/v1/events?kinds=bogus", "", "")
	if code != http.StatusBadRequest || !strings.Contains(body, "kinds") {
		t.Fatalf("refused stream: HTTP %d %s", code, body)
	}
}

// TestTokenRevokedEndsStream: a stream opened with a token ends once the
// token is revoked (the authorizer's recheck).
func TestTokenRevokedEndsStream(t *testing.T) {
	f := setup(t)
	req, _ := http.NewRequest("GET", f.url+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+f.viewer)
	resp, err := f.newClient(nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	if line, err := r.ReadString('\n'); err != nil || !strings.Contains(line, "result") {
		t.Fatalf("first line %q %v", line, err)
	}
	f.revoke("viewer")
	line, _ := r.ReadString('\n')
	if !strings.Contains(line, `"error"`) || !strings.Contains(line, "revoked") {
		t.Fatalf("after revocation: %q", line)
	}
}

// TestCORS: off by default; with origins, their preflight is answered
// (Authorization allowed, no credentials) and others are refused.
func TestCORS(t *testing.T) {
	pre := []string{"Origin", "https://dash.example", "Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "authorization"}
	off := setup(t)
	_, _, h := do(t, off.newClient(nil), "OPTIONS", off.url+"/v1/services", "", "", pre...)
	if h.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("CORS answered while off: %v", h)
	}
	on := setup(t, "https://dash.example")
	code, _, h := do(t, on.newClient(nil), "OPTIONS", on.url+"/v1/services", "", "", pre...)
	if code != 204 || h.Get("Access-Control-Allow-Origin") != "https://dash.example" ||
		!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") || h.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("allowed preflight: %d %v", code, h)
	}
	code, _, h = do(t, on.newClient(nil), "GET", on.url+"/v1/services", on.viewer, "", "Origin", "https://dash.example")
	if code != 200 || h.Get("Access-Control-Allow-Origin") != "https://dash.example" {
		t.Fatalf("allowed request: %d %v", code, h)
	}
	pre[1] = "https://evil.example"
	code, _, h = do(t, on.newClient(nil), "OPTIONS", on.url+"/v1/services", "", "", pre...)
	if code != 403 || h.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("refused preflight: %d %v", code, h)
	}
}

// TestOpenAPIServed: the committed document is served and names the
// resource paths.
func TestOpenAPIServed(t *testing.T) {
	f := setup(t)
	code, body, _ := do(t, f.newClient(nil), "GET", f.url+"/v1/openapi.json", "", "")
	var doc struct {
		Paths map[string]any `json:"paths"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil || code != 200 {
		t.Fatalf("HTTP %d: %v", code, err)
	}
	for _, p := range []string{"/v1/services", "/v1/services/{serviceId}", "/v1/nodes/{ref}", "/v1/events", "/v1/tokens", "/v1/logs"} {
		if _, ok := doc.Paths[p]; !ok {
			t.Errorf("OpenAPI has no path %s", p)
		}
	}
}

// TestHandlerReachedOnlyAuthorized: a handler is reached only through
// the authorizer, whether the gateway calls it directly or over gRPC: a
// refused caller never reaches it, and an admitted one arrives with its
// identity, as an in-process peer, with the method named, only the
// gateway's metadata incoming and nothing outgoing (the caller's token is
// not passed on to what the handler calls).
func TestHandlerReachedOnlyAuthorized(t *testing.T) {
	for _, direct := range []bool{true, false} {
		t.Run(map[bool]string{true: "direct", false: "grpc"}[direct], func(t *testing.T) {
			f := setupVia(t, direct)
			anon := f.newClient(nil)
			for _, tc := range []struct {
				name   string
				client *http.Client
				token  string
				want   int
			}{
				{"anonymous", anon, "", 401},
				{"worker", f.newClient(&f.worker), "", 403},
				{"bad token", anon, "shoal_x_y", 401},
			} {
				if code, body, _ := do(t, tc.client, "GET", f.url+"/v1/services", tc.token, ""); code != tc.want {
					t.Fatalf("%s: HTTP %d %s, want %d", tc.name, code, body, tc.want)
				}
				select {
				case s := <-f.fake.listed:
					t.Fatalf("%s: the handler was reached without authorization (%+v)", tc.name, s)
				default:
				}
			}
			for _, tc := range []struct {
				name   string
				client *http.Client
				token  string
				want   trust.Identity
			}{
				{"viewer token", anon, f.viewer, trust.Identity{NodeID: "viewer", Role: trust.RoleViewerToken}},
				{"admin cert", f.newClient(&f.admin), "", trust.Identity{NodeID: "ops", Role: trust.RoleAdmin}},
			} {
				if code, body, _ := do(t, tc.client, "GET", f.url+"/v1/services", tc.token, ""); code != 200 {
					t.Fatalf("%s: HTTP %d %s", tc.name, code, body)
				}
				var s seen
				select {
				case s = <-f.fake.listed:
				default:
					t.Fatalf("%s: 200 without reaching the handler", tc.name)
				}
				if !s.named || s.identity.NodeID != tc.want.NodeID || s.identity.Role != tc.want.Role {
					t.Errorf("%s: handler saw identity %+v (named %v), want %+v", tc.name, s.identity, s.named, tc.want)
				}
				// Direct names a certificate's holder by its verified TLS
				// connection; otherwise the caller is the in-process peer.
				wantPeer := "in-process"
				if direct && tc.token == "" {
					wantPeer = "tls"
				}
				if s.peer != wantPeer || s.fullMethod != shoalv1.Control_ListServices_FullMethodName {
					t.Errorf("%s: peer %q, method %q", tc.name, s.peer, s.fullMethod)
				}
				if len(s.outgoing) != 0 {
					t.Errorf("%s: handler's outgoing metadata %v, want none", tc.name, s.outgoing)
				}
				// (The gateway passes Authorization on twice, by itself and
				// by incomingHeader; both are the caller's.)
				for _, got := range s.incoming.Get("authorization") {
					if got != "Bearer "+tc.token {
						t.Errorf("%s: incoming authorization %q", tc.name, got)
					}
				}
				if _, cert := s.incoming[trust.MDClientCert]; cert != (tc.token == "") {
					t.Errorf("%s: incoming metadata %v", tc.name, s.incoming)
				}
			}
		})
	}
}

// TestHandlerHeaders: headers a handler sets (the raft term) reach the
// HTTP reply as Grpc-Metadata- headers, on success and on error.
func TestHandlerHeaders(t *testing.T) {
	for _, direct := range []bool{true, false} {
		t.Run(map[bool]string{true: "direct", false: "grpc"}[direct], func(t *testing.T) {
			f := setupVia(t, direct)
			for ref, want := range map[string]int{"s1": 200, "missing": 404} {
				code, body, h := do(t, f.newClient(&f.admin), "GET", f.url+"/v1/services/"+ref, "", "")
				if code != want || h.Get("Grpc-Metadata-Shoal-Raft-Term") != "5" {
					t.Errorf("%s: HTTP %d %s, headers %v", ref, code, body, h)
				}
			}
		})
	}
}

// TestMetricsNeedAdminCert: /metrics on the API port is what the metrics
// port serves, under the same rule: a client certificate of the cluster
// with the admin or manager role; no certificate, a token or a worker's
// certificate read nothing.
func TestMetricsNeedAdminCert(t *testing.T) {
	f := setup(t)
	for _, tc := range []struct {
		name  string
		cert  *tls.Certificate
		token string
		want  int
	}{
		{"nobody", nil, "", http.StatusUnauthorized},
		{"viewer token", nil, f.viewer, http.StatusUnauthorized},
		{"worker", &f.worker, "", http.StatusForbidden},
		{"admin", &f.admin, "", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := do(t, f.newClient(tc.cert), "GET", f.url+"/metrics", tc.token, "")
			if code != tc.want {
				t.Fatalf("GET /metrics: %d %s, want %d", code, body, tc.want)
			}
			if code != http.StatusOK && strings.Contains(body, "shoal_tasks") {
				t.Fatalf("refused, yet served the metrics: %s", body)
			}
		})
	}
}

// TestCrossOriginWriteRefused: a browser holding a client certificate
// sends it with a page's cross-origin form POST (a "simple" request, no
// preflight, text/plain JSON), so a write from another origin that does
// not carry a token (which a page can set only after a preflight CORS
// answers) is refused before it reaches a handler, CORS on or off. The
// same write from no browser (no Origin) or the server's own origin, or a
// cross-origin one with a token, goes through.
func TestCrossOriginWriteRefused(t *testing.T) {
	body := `{"spec":{"name":"x","task":{"container":{"image":"demo"}}}}`
	for _, origins := range [][]string{nil, {"*"}} {
		f := setup(t, origins...)
		c := f.newClient(&f.admin)
		for _, origin := range []string{"https://evil.example", "null"} {
			code, resp, _ := do(t, c, "POST", f.url+"/v1/services", "", body, "Origin", origin, "Content-Type", "text/plain")
			if code != http.StatusForbidden || strings.Contains(resp, "s1") {
				t.Fatalf("CORS %v: cross-origin write from %s: %d %s", origins, origin, code, resp)
			}
		}
		for _, origin := range []string{"", f.url} {
			var hdr []string
			if origin != "" {
				hdr = []string{"Origin", origin}
			}
			if code, resp, _ := do(t, c, "POST", f.url+"/v1/services", "", body, hdr...); code != http.StatusOK {
				t.Fatalf("CORS %v: write from origin %q: %d %s", origins, origin, code, resp)
			}
		}
		if code, resp, _ := do(t, f.newClient(nil), "POST", f.url+"/v1/services", f.operator, body, "Origin", "https://dash.example"); code != http.StatusOK {
			t.Fatalf("CORS %v: cross-origin write with a token: %d %s", origins, code, resp)
		}
	}
}
