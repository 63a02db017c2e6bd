package ui

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string, hdr map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestHandlerServesAssets(t *testing.T) {
	h := Handler()
	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/", "text/html", `<script type="module" src="/app.js">`},
		{"/index.html", "text/html", "<title>Shoal</title>"},
		{"/app.js", "text/javascript; charset=utf-8", "import { Api"},
		{"/api.js", "text/javascript; charset=utf-8", "export class Api"},
		{"/style.css", "text/css", "table"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			res := get(t, h, http.MethodGet, tc.path, nil)
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d", res.StatusCode)
			}
			if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.ctype) {
				t.Errorf("Content-Type %q, want %q", ct, tc.ctype)
			}
			if !strings.Contains(string(body), tc.contains) {
				t.Errorf("body lacks %q", tc.contains)
			}
			for _, k := range []string{"Content-Security-Policy", "X-Content-Type-Options", "ETag"} {
				if res.Header.Get(k) == "" {
					t.Errorf("no %s header", k)
				}
			}
			if csp := res.Header.Get("Content-Security-Policy"); strings.Contains(csp, "unsafe") {
				t.Errorf("CSP allows unsafe sources: %s", csp)
			}
		})
	}
}

func TestHandlerRefuses(t *testing.T) {
	h := Handler()
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/nope.js", http.StatusNotFound},
		{http.MethodGet, "/v1/services", http.StatusNotFound},
		{http.MethodGet, "/assets/app.js", http.StatusNotFound},
		{http.MethodPost, "/", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/app.js", http.StatusMethodNotAllowed},
	} {
		if res := get(t, h, tc.method, tc.path, nil); res.StatusCode != tc.status {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, res.StatusCode, tc.status)
		}
	}
}

func TestHandlerRevalidates(t *testing.T) {
	h := Handler()
	res := get(t, h, http.MethodGet, "/app.js", nil)
	etag := res.Header.Get("ETag")
	if res.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("Cache-Control %q", res.Header.Get("Cache-Control"))
	}
	if res := get(t, h, http.MethodGet, "/app.js", map[string]string{"If-None-Match": etag}); res.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: status %d, want 304", res.StatusCode)
	}
}

// TestAssetsSafe keeps the rules the CSP relies on and that keep server
// data from becoming markup: no inline script or style in the page, no
// innerHTML/outerHTML/insertAdjacentHTML/eval in the scripts, and every
// module imported exists.
func TestAssetsSafe(t *testing.T) {
	idx, err := fs.ReadFile(assets, "assets/index.html")
	if err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`<script(?:[^>]*)>[^<]+</script>|<style|\sstyle=|\son[a-z]+=`).Match(idx) {
		t.Errorf("index.html has inline script, style or handler")
	}
	bad := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function`)
	imp := regexp.MustCompile(`from '\./([a-z]+\.js)'`)
	err = fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !strings.HasSuffix(p, ".js") {
			return err
		}
		b, err := fs.ReadFile(assets, p)
		if err != nil {
			return err
		}
		if m := bad.Find(b); m != nil {
			t.Errorf("%s uses %s", p, m)
		}
		for _, m := range imp.FindAllSubmatch(b, -1) {
			if _, err := fs.Stat(assets, "assets/"+string(m[1])); err != nil {
				t.Errorf("%s imports missing %s", p, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
