package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
)

// A minimal W3C WebDriver client for Debian's chromedriver: the dashboard
// tests drive headless Chromium with it, with no npm or browser bundle.

// chromeArgs are the launch flags that work in this (root, no GPU, no
// network) environment.
var chromeArgs = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--disable-dev-shm-usage", "--window-size=1440,900", "--force-device-scale-factor=1",
}

// elementKey is the W3C key of an element reference.
const elementKey = "element-6066-11e4-a52e-4f735466cecf"

type browser struct {
	t    testing.TB
	base string // chromedriver's URL
	sess string
	hc   *http.Client
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// newBrowser starts chromedriver on loopback and a headless Chromium
// session with a fresh profile; both end with the test (the driver's
// process group is killed, so no Chromium outlives it).
func newBrowser(t *testing.T) *browser { return newBrowserOn(t, nil) }

// newBrowserOn is newBrowser inside host h's network namespace (nil: the
// test's own): the browser then reaches the cluster's addresses, and the
// test reaches the driver through h's loopback. It accepts any server
// certificate: the page under test is the cluster's own HTTPS API, whose
// CA the fresh profile does not hold (the API tests check the TLS).
func newBrowserOn(t *testing.T, h *harness.Host) *browser {
	t.Helper()
	driver, err := exec.LookPath("chromedriver")
	if err != nil {
		t.Fatalf("chromedriver not installed (scripts/setup.sh installs chromium and chromium-driver): %v", err)
	}
	chrome := "/usr/bin/chromium"
	if _, err := os.Stat(chrome); err != nil {
		t.Fatalf("chromium not installed (scripts/setup.sh): %v", err)
	}
	port := freePort(t)
	logf, err := os.Create(filepath.Join(t.TempDir(), "chromedriver.log"))
	if err != nil {
		t.Fatal(err)
	}
	args := []string{fmt.Sprintf("--port=%d", port), "--allowed-ips=127.0.0.1"}
	cmd := exec.Command(driver, args...)
	hc := &http.Client{Timeout: 60 * time.Second}
	extra := []string{}
	if h != nil {
		cmd = exec.Command("nsenter", append([]string{"--net=/run/netns/" + h.NS, "--", driver}, args...)...)
		hc = h.HTTPClient(60 * time.Second)
		extra = append(extra, "--ignore-certificate-errors")
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, base: fmt.Sprintf("http://127.0.0.1:%d", port), hc: hc}
	profile := t.TempDir()
	t.Cleanup(func() {
		if b.sess != "" && t.Failed() {
			b.dumpDiagnostics()
		}
		if b.sess != "" {
			b.do(http.MethodDelete, "/session/"+b.sess, nil, nil)
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		logf.Close()
		// Chromium forks helpers that may have left the group: end any
		// process still using the profile directory.
		killUsing(profile)
	})
	harness.Eventually(t, 30*time.Second, 50*time.Millisecond, func() error {
		res, err := b.hc.Get(b.base + "/status")
		if err != nil {
			return err
		}
		res.Body.Close()
		return nil
	})
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName": "chrome",
		"goog:chromeOptions": map[string]any{
			"binary": chrome,
			"args":   append(append(append([]string{}, chromeArgs...), extra...), "--user-data-dir="+profile),
			// Network events, for dumpDiagnostics.
			"perfLoggingPrefs": map[string]any{"enableNetwork": true, "enablePage": true},
		},
		// The console and the network log, read back when a test fails.
		"goog:loggingPrefs": map[string]string{"browser": "ALL", "performance": "ALL"},
	}}}
	var out struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.do(http.MethodPost, "/session", caps, &out); err != nil {
		t.Fatalf("new Chromium session: %v", err)
	}
	b.sess = out.SessionID
	return b
}

// dumpDiagnostics logs what a failed test needs to tell a page that
// could not reach its server from one that misbehaved: the page's URL and
// state, its console messages and every request the network log saw
// failing or answered with an error, with Chromium's reason (net::ERR_...).
func (b *browser) dumpDiagnostics() {
	b.t.Helper()
	var url string
	_ = b.do(http.MethodGet, b.s("/url"), nil, &url)
	var state string
	_ = b.JS(&state, `const t = (s) => { const e = document.querySelector(s); return e ? e.textContent : "(none)"; };
		return "readyState " + document.readyState + " | banner: " + t("#banner") + " | login-error: " + t("#login-error") + " | live: " + t("#live");`)
	b.t.Logf("browser: page %s (%s)", url, state)
	var console []struct {
		Level     string `json:"level"`
		Message   string `json:"message"`
		Timestamp int64  `json:"timestamp"`
	}
	if err := b.do(http.MethodPost, b.s("/se/log"), map[string]string{"type": "browser"}, &console); err != nil {
		b.t.Logf("browser: console log: %v", err)
	}
	for _, m := range console {
		b.t.Logf("browser console %s %s: %s", time.UnixMilli(m.Timestamp).UTC().Format("15:04:05.000"), m.Level, m.Message)
	}
	var perf []struct {
		Message   string `json:"message"`
		Timestamp int64  `json:"timestamp"`
	}
	if err := b.do(http.MethodPost, b.s("/se/log"), map[string]string{"type": "performance"}, &perf); err != nil {
		b.t.Logf("browser: network log: %v", err)
	}
	urls := map[string]string{}
	for _, p := range perf {
		var m struct {
			Message struct {
				Method string `json:"method"`
				Params struct {
					RequestID string `json:"requestId"`
					Request   struct {
						Method string `json:"method"`
						URL    string `json:"url"`
					} `json:"request"`
					Response struct {
						Status   int    `json:"status"`
						Protocol string `json:"protocol"`
					} `json:"response"`
					ErrorText string `json:"errorText"`
					Canceled  bool   `json:"canceled"`
				} `json:"params"`
			} `json:"message"`
		}
		if json.Unmarshal([]byte(p.Message), &m) != nil {
			continue
		}
		at := time.UnixMilli(p.Timestamp).UTC().Format("15:04:05.000")
		pm := m.Message.Params
		switch m.Message.Method {
		case "Network.requestWillBeSent":
			urls[pm.RequestID] = pm.Request.Method + " " + pm.Request.URL
		case "Network.responseReceived":
			if pm.Response.Status >= 400 || pm.Response.Status == 0 {
				b.t.Logf("browser network %s: %s: HTTP %d (%s)", at, urls[pm.RequestID], pm.Response.Status, pm.Response.Protocol)
			}
		case "Network.loadingFailed":
			b.t.Logf("browser network %s: %s failed: %s (canceled %v)", at, urls[pm.RequestID], pm.ErrorText, pm.Canceled)
		}
	}
}

// killUsing kills processes whose command line names dir (a Chromium
// profile this test made).
func killUsing(dir string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cl, []byte(dir)) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// do sends one WebDriver command; out receives the reply's "value".
func (b *browser) do(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		j, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, b.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := b.hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	var env struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return fmt.Errorf("webdriver %s %s: %d %s", method, path, res.StatusCode, raw)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("webdriver %s %s: %d %s", method, path, res.StatusCode, env.Value)
	}
	if out != nil {
		return json.Unmarshal(env.Value, out)
	}
	return nil
}

func (b *browser) s(path string) string { return "/session/" + b.sess + path }

// Go opens url.
func (b *browser) Go(url string) {
	b.t.Helper()
	if err := b.do(http.MethodPost, b.s("/url"), map[string]string{"url": url}, nil); err != nil {
		b.t.Fatal(err)
	}
}

// JS runs script (a function body; arguments[i] are args) and decodes its
// return value into out (if not nil).
func (b *browser) JS(out any, script string, args ...any) error {
	if args == nil {
		args = []any{}
	}
	return b.do(http.MethodPost, b.s("/execute/sync"), map[string]any{"script": script, "args": args}, out)
}

// find returns the element matching css, or an error.
func (b *browser) find(css string) (string, error) {
	var v map[string]string
	if err := b.do(http.MethodPost, b.s("/element"), map[string]string{"using": "css selector", "value": css}, &v); err != nil {
		return "", err
	}
	return v[elementKey], nil
}

// Click clicks the element matching css once it exists and is enabled.
func (b *browser) Click(css string) {
	b.t.Helper()
	harness.Eventually(b.t, 30*time.Second, 50*time.Millisecond, func() error {
		id, err := b.find(css)
		if err != nil {
			return err
		}
		return b.do(http.MethodPost, b.s("/element/"+id+"/click"), map[string]any{}, nil)
	})
}

// Type replaces the value of the input matching css with text, typed.
func (b *browser) Type(css, text string) {
	b.t.Helper()
	harness.Eventually(b.t, 30*time.Second, 50*time.Millisecond, func() error {
		id, err := b.find(css)
		if err != nil {
			return err
		}
		if err := b.do(http.MethodPost, b.s("/element/"+id+"/clear"), map[string]any{}, nil); err != nil {
			return err
		}
		return b.do(http.MethodPost, b.s("/element/"+id+"/value"), map[string]any{"text": text}, nil)
	})
}

// Text is the text content of the first element matching css ("" if none).
func (b *browser) Text(css string) string {
	b.t.Helper()
	var s string
	if err := b.JS(&s, `const e = document.querySelector(arguments[0]); return e ? e.textContent : "";`, css); err != nil {
		b.t.Fatal(err)
	}
	return s
}

// WaitText waits until the text of the element matching css contains want.
func (b *browser) WaitText(css, want string, timeout time.Duration) {
	b.t.Helper()
	harness.Eventually(b.t, timeout, 20*time.Millisecond, func() error {
		var s string
		if err := b.JS(&s, `const e = document.querySelector(arguments[0]); return e ? e.textContent : "";`, css); err != nil {
			return err
		}
		if !strings.Contains(s, want) {
			if len(s) > 300 {
				s = s[:300] + "…"
			}
			return fmt.Errorf("%s: %q does not contain %q", css, s, want)
		}
		return nil
	})
}

// Screenshot saves a PNG of the page to path.
func (b *browser) Screenshot(path string) {
	b.t.Helper()
	var s string
	if err := b.do(http.MethodGet, b.s("/screenshot"), nil, &s); err != nil {
		b.t.Fatal(err)
	}
	png, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}
