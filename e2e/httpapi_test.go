package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// httpPort is a manager's default HTTPS port (advertise port + 2).
const httpPort = harness.APIPort + 2

// httpClient is a curl-like client of one manager's HTTPS API: it trusts
// the cluster CA only, dials from inside a host's namespace, and presents
// a token or (cert) the admin client certificate.
type httpClient struct {
	t     *testing.T
	base  string
	token string
	c     *http.Client
}

func newHTTPClient(t *testing.T, from *harness.Host, manager *harness.Host, adminDir, token string, cert bool) *httpClient {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(adminDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	conf := &tls.Config{RootCAs: pool, ServerName: trust.ManagerServerName}
	if cert {
		pair, err := tls.LoadX509KeyPair(filepath.Join(adminDir, "admin.crt"), filepath.Join(adminDir, "admin.key"))
		if err != nil {
			t.Fatal(err)
		}
		conf.Certificates = []tls.Certificate{pair}
	}
	tr := from.Transport()
	tr.TLSClientConfig = conf
	tr.ForceAttemptHTTP2 = true
	return &httpClient{t: t, base: "https://" + net.JoinHostPort(manager.IP, fmt.Sprint(httpPort)), token: token, c: &http.Client{Transport: tr}}
}

func (h *httpClient) request(ctx context.Context, method, path, body string, hdr ...string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	if h.token != "" {
		req.Header.Set("Authorization", "Bearer "+h.token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return h.c.Do(req)
}

// call does one request and returns the status and body.
func (h *httpClient) call(method, path, body string, hdr ...string) (int, string) {
	h.t.Helper()
	ctx, cancel := attempt()
	defer cancel()
	resp, err := h.request(ctx, method, path, body, hdr...)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// must does one request that must answer want, decoding the reply into out.
func (h *httpClient) must(want int, method, path, body string, out any) string {
	h.t.Helper()
	code, reply := h.call(method, path, body)
	if code != want {
		h.t.Fatalf("%s %s: HTTP %d %s, want %d", method, path, code, reply, want)
	}
	if out != nil {
		var err error
		if pm, ok := out.(proto.Message); ok {
			err = protojson.Unmarshal([]byte(reply), pm)
		} else {
			err = json.Unmarshal([]byte(reply), out)
		}
		if err != nil {
			h.t.Fatalf("%s %s: decoding %s: %v", method, path, reply, err)
		}
	}
	return reply
}

// TestHTTPAPI: the JSON API of a three-manager cluster over HTTPS with the
// cluster CA: a service created, listed (paged), updated and removed as
// JSON through a follower (which forwards to the leader); tokens of each
// role; 401 for a wrong, revoked or expired token, 403 for a viewer
// writing, 404, 409 for a stale version, 400 for an unknown field and a
// bad spec field (named); /v1/events streams the change; logs follow over
// NDJSON; CORS is off here (no preflight answered).
func TestHTTPAPI(t *testing.T) {
	c := newCluster(t, 3, 0)
	h1 := c.hosts[0]
	cl := h1.Local()
	leader := c.leader(h1, nil)
	var follower *harness.Host
	for _, m := range c.managers {
		if m != leader {
			follower = m
			break
		}
	}
	admin := newHTTPClient(t, h1, follower, c.adminDir, "", true)

	// Tokens from the CLI: each printed once.
	mkToken := func(name, role string, extra ...string) string {
		ctx, cancel := attempt()
		defer cancel()
		out, err := cl.Run(ctx, append([]string{"token", "create", name, "--role", role}, extra...)...)
		if err != nil {
			t.Fatalf("token create %s: %v", name, err)
		}
		tok := strings.TrimSpace(out)
		if !strings.HasPrefix(tok, trust.TokenPrefix) {
			t.Fatalf("token create printed %q", out)
		}
		return tok
	}
	viewerTok := mkToken("dash", "viewer")
	operatorTok := mkToken("ci", "operator")
	revokedTok := mkToken("old", "admin")
	expiringTok := mkToken("brief", "viewer", "--ttl", "2s")
	{
		ctx, cancel := attempt()
		out, err := cl.Run(ctx, "token", "ls")
		cancel()
		if err != nil || !strings.Contains(out, "dash") || strings.Contains(out, viewerTok) {
			t.Fatalf("token ls: %v\n%s", err, out)
		}
		ctx, cancel = attempt()
		_, err = cl.Run(ctx, "token", "revoke", "old")
		cancel()
		if err != nil {
			t.Fatalf("token revoke: %v", err)
		}
		// join-token is the new name of token show.
		ctx, cancel = attempt()
		out, err = cl.Run(ctx, "join-token", "show", "worker")
		cancel()
		if err != nil || strings.TrimSpace(out) != c.workerToken {
			t.Fatalf("join-token show worker: %v %q", err, out)
		}
	}
	viewer := newHTTPClient(t, h1, follower, c.adminDir, viewerTok, false)
	operator := newHTTPClient(t, h1, follower, c.adminDir, operatorTok, false)

	// Create as the operator, through a follower.
	spec := fmt.Sprintf(`{"spec":{"name":"web","replicas":"1","task":{"container":{"image":%q,"args":["alloc","1m","--hold","inf"]}}}}`, testImage)
	var created shoalv1.CreateServiceResponse
	operator.must(200, "POST", "/v1/services", spec, &created)
	svc := created.GetService()
	if svc.GetMeta().GetId() == "" || svc.GetSpec().GetName() != "web" {
		t.Fatalf("created %v", svc)
	}
	// A second one to page through.
	operator.must(200, "POST", "/v1/services", strings.Replace(spec, `"web"`, `"web2"`, 1), nil)

	var page shoalv1.ListServicesResponse
	viewer.must(200, "GET", "/v1/services?page.page_size=1", "", &page)
	if len(page.GetServices()) != 1 || page.GetTotal() != 2 || page.GetNextPageToken() == "" {
		t.Fatalf("first page: %v", &page)
	}
	first := page.GetServices()[0].GetMeta().GetId()
	viewer.must(200, "GET", "/v1/services?page.page_size=1&page.page_token="+page.GetNextPageToken(), "", &page)
	if len(page.GetServices()) != 1 || page.GetNextPageToken() != "" || page.GetServices()[0].GetMeta().GetId() == first {
		t.Fatalf("second page: %v", &page)
	}
	var filtered shoalv1.ListServicesResponse
	viewer.must(200, "GET", "/v1/services?filters%5Bname%5D=web", "", &filtered)
	if len(filtered.GetServices()) != 1 || filtered.GetServices()[0].GetMeta().GetId() != svc.GetMeta().GetId() {
		t.Fatalf("filters[name]=web: %v", &filtered)
	}

	// Events: a stream from the service's creation sees its update.
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	events, err := viewer.request(ctx, "GET", fmt.Sprintf("/v1/events?fromIndex=%d&kinds=service", svc.GetMeta().GetVersion()), "")
	if err != nil || events.StatusCode != 200 {
		t.Fatalf("events: %v %v", events, err)
	}
	defer events.Body.Close()
	lines := bufio.NewScanner(events.Body)
	lines.Buffer(make([]byte, 1<<20), 1<<22)
	if !lines.Scan() || !strings.Contains(lines.Text(), svc.GetMeta().GetId()) {
		t.Fatalf("first event: %q %v", lines.Text(), lines.Err())
	}

	// Update (scale to 2) with the version read; then the same stale version: 409.
	upd := fmt.Sprintf(`{"version":"%d","spec":%s}`, svc.GetMeta().GetVersion(), strings.Replace(strings.TrimSuffix(strings.TrimPrefix(spec, `{"spec":`), "}"), `"replicas":"1"`, `"replicas":"2"`, 1))
	var updated shoalv1.UpdateServiceResponse
	operator.must(200, "PATCH", "/v1/services/"+svc.GetMeta().GetId(), upd, &updated)
	if updated.GetService().GetSpec().GetReplicas() != 2 {
		t.Fatalf("updated %v", updated.GetService())
	}
	if code, body := operator.call("PATCH", "/v1/services/"+svc.GetMeta().GetId(), upd); code != 409 {
		t.Fatalf("stale version: HTTP %d %s, want 409", code, body)
	}
	for lines.Scan() {
		var ev struct {
			Result struct {
				Index  string `json:"index"`
				Action string `json:"action"`
				Object struct {
					Service *struct {
						Meta struct{ ID string } `json:"meta"`
						Spec struct {
							Replicas string `json:"replicas"`
						} `json:"spec"`
					} `json:"service"`
				} `json:"object"`
			} `json:"result"`
		}
		if err := json.Unmarshal(lines.Bytes(), &ev); err != nil {
			t.Fatalf("event %q: %v", lines.Text(), err)
		}
		if s := ev.Result.Object.Service; ev.Result.Action == "WATCH_ACTION_UPDATE" && s != nil && s.Meta.ID == svc.GetMeta().GetId() && s.Spec.Replicas == "2" {
			break
		}
	}
	if ctx.Err() != nil || lines.Err() != nil {
		t.Fatalf("no update event before the deadline: %v", lines.Err())
	}
	events.Body.Close()

	// Errors keep their class.
	for _, tc := range []struct {
		name   string
		cl     *httpClient
		method string
		path   string
		body   string
		code   int
		msg    string
	}{
		{"no credential", newHTTPClient(t, h1, follower, c.adminDir, "", false), "GET", "/v1/services", "", 401, "API bearer token"},
		{"wrong token", newHTTPClient(t, h1, follower, c.adminDir, viewerTok[:len(viewerTok)-2]+"AA", false), "GET", "/v1/services", "", 401, "wrong secret"},
		{"revoked token", newHTTPClient(t, h1, follower, c.adminDir, revokedTok, false), "GET", "/v1/services", "", 401, "revoked"},
		{"viewer writes", viewer, "DELETE", "/v1/services/web", "", 403, "needs role operator"},
		{"operator removes a node", operator, "DELETE", "/v1/nodes/" + c.nodeIDs[h1], "", 403, "needs role admin"},
		{"missing", viewer, "GET", "/v1/services/nope", "", 404, "nope"},
		{"unknown field", operator, "POST", "/v1/services", `{"spec":{"name":"x","replicaz":"2"}}`, 400, "replicaz"},
		{"bad spec field", operator, "POST", "/v1/services", `{"spec":{"name":"x","task":{"container":{"image":"demo:latest","stopSignal":"SIGNOPE"}}}}`, 400, "spec.task.container.stop_signal"},
		{"CORS off", viewer, "OPTIONS", "/v1/services", "", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.code == 0 {
				ctx, cancel := attempt()
				defer cancel()
				resp, err := tc.cl.request(ctx, tc.method, tc.path, "", "Origin", "https://dash.example", "Access-Control-Request-Method", "GET")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if v := resp.Header.Get("Access-Control-Allow-Origin"); v != "" {
					t.Fatalf("preflight answered with CORS off: %q", v)
				}
				return
			}
			code, body := tc.cl.call(tc.method, tc.path, tc.body)
			if code != tc.code || !strings.Contains(body, tc.msg) {
				t.Fatalf("HTTP %d %s, want %d with %q", code, body, tc.code, tc.msg)
			}
		})
	}

	// Logs follow over NDJSON, from a follower.
	harness.WaitRunning(t, cl, "web", 2, runTimeout)
	lctx, lcancel := context.WithTimeout(context.Background(), settleTimeout)
	defer lcancel()
	logs, err := viewer.request(lctx, "GET", "/v1/logs?service=web&options.follow=true", "")
	if err != nil || logs.StatusCode != 200 {
		t.Fatalf("logs: %v %v", logs, err)
	}
	defer logs.Body.Close()
	ls := bufio.NewScanner(logs.Body)
	found := false
	for !found && ls.Scan() {
		var m struct {
			Result struct {
				Messages []struct {
					Data []byte `json:"data"` // protojson bytes: base64, as encoding/json reads []byte
				} `json:"messages"`
			} `json:"result"`
		}
		if err := json.Unmarshal(ls.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", ls.Text(), err)
		}
		for _, l := range m.Result.Messages {
			found = found || strings.Contains(string(l.Data), talkerLine)
		}
	}
	if !found {
		t.Fatalf("no %q in the followed logs: %v", talkerLine, ls.Err())
	}
	logs.Body.Close()

	// Remove as the operator; gone for everyone.
	operator.must(200, "DELETE", "/v1/services/web", "", nil)
	operator.must(200, "DELETE", "/v1/services/web2", "", nil)
	if code, _ := admin.call("GET", "/v1/services/web", ""); code != 404 {
		t.Fatalf("removed service: HTTP %d", code)
	}
	// The 2 s token has expired by now (the test took longer): 401 saying so.
	brief := newHTTPClient(t, h1, follower, c.adminDir, expiringTok, false)
	harness.Eventually(t, settleTimeout, poll, func() error {
		if code, body := brief.call("GET", "/v1/services", ""); code != 401 || !strings.Contains(body, "expired") {
			return fmt.Errorf("expired token: HTTP %d %s", code, body)
		}
		return nil
	})
	var toks shoalv1.ListTokensResponse
	admin.must(200, "GET", "/v1/tokens", "", &toks)
	if len(toks.GetTokens()) != 4 {
		t.Fatalf("tokens: %v", &toks)
	}
	for _, tk := range toks.GetTokens() {
		if len(tk.GetSecretHash()) != 0 {
			t.Fatalf("token list shows a hash: %v", tk)
		}
	}
}
