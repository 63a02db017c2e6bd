package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	good := map[string]int64{
		"0": 0, "4096": 4096, "64k": 64 << 10, "64K": 64 << 10, "64m": 64 << 20,
		"64M": 64 << 20, "64MB": 64 << 20, "64MiB": 64 << 20, "1g": 1 << 30,
		"1.5g": 3 << 29, "2t": 2 << 40, "10b": 10,
	}
	for in, want := range good {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "m", "-1m", "abc", "12x", "1e30g"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestParseDuration(t *testing.T) {
	good := map[string]time.Duration{
		"inf": -1, "Infinity": -1, "forever": -1, "0": 0, "10": 10 * time.Second,
		"2.5": 2500 * time.Millisecond, "1m30s": 90 * time.Second, "100ms": 100 * time.Millisecond,
	}
	for in, want := range good {
		got, err := parseDuration(in)
		if err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "-5s", "soon", "1e300"} {
		if got, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) = %v, want an error", in, got)
		}
	}
}

func TestTakeFlag(t *testing.T) {
	v := "def"
	rest, err := takeFlag([]string{"64m", "--hold", "5s"}, "hold", &v)
	if err != nil || v != "5s" || len(rest) != 1 || rest[0] != "64m" {
		t.Fatalf("got %v %q %v", rest, v, err)
	}
	rest, err = takeFlag([]string{"--hold=1m", "x"}, "hold", &v)
	if err != nil || v != "1m" || len(rest) != 1 {
		t.Fatalf("got %v %q %v", rest, v, err)
	}
	if _, err := takeFlag([]string{"--hold"}, "hold", &v); err == nil {
		t.Error("missing value: want an error")
	}
	if _, err := takeFlag([]string{"--bogus", "1"}, "hold", &v); err == nil {
		t.Error("unknown flag: want an error")
	}
}

func TestRunSimpleCommands(t *testing.T) {
	cases := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"true"}, 0, ""},
		{[]string{"exit", "42"}, 42, ""},
		{[]string{"exit"}, 2, ""},
		{[]string{"echo", "a", "b c"}, 0, "a b c\n"},
		{[]string{"sleep", "10ms"}, 0, ""},
		{[]string{"sleep", "nope"}, 2, ""},
		{[]string{"alloc", "1m", "--hold", "0"}, 0, "done: 1048576 bytes allocated and touched\n"},
		{[]string{"cat", "/nonexistent/file"}, 1, ""},
		{[]string{"write", "/nonexistent/dir/file", "x"}, 1, ""},
		{[]string{"no-such-command"}, 2, ""},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := run(c.args, &out, &errb)
		if code != c.code {
			t.Errorf("%v: exit %d, want %d (stderr %q)", c.args, code, c.code, errb.String())
		}
		if c.out != "" && !strings.HasSuffix(out.String(), c.out) {
			t.Errorf("%v: stdout %q, want suffix %q", c.args, out.String(), c.out)
		}
	}
}

func TestWriteCatLs(t *testing.T) {
	dir := t.TempDir()
	f := dir + "/hello.txt"
	var out, errb bytes.Buffer
	if code := run([]string{"write", f, "hi"}, &out, &errb); code != 0 {
		t.Fatalf("write: %d %s", code, errb.String())
	}
	if code := run([]string{"cat", f}, &out, &errb); code != 0 || out.String() != "hi" {
		t.Fatalf("cat: %d %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"ls", dir}, &out, &errb); code != 0 || !strings.Contains(out.String(), "hello.txt") {
		t.Fatalf("ls: %d %q", code, out.String())
	}
}

func TestCapLines(t *testing.T) {
	status := "Name:\tx\nCapInh:\t0\nCapPrm:\t1\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nCapAmb:\t0\n"
	want := "CapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n"
	if got := capLines(status); got != want {
		t.Errorf("capLines = %q, want %q", got, want)
	}
}

func TestHandlerText(t *testing.T) {
	t.Setenv("SHOAL_TEST_VAR", "v1")
	h := newHandler(func(int) { t.Error("unexpected exit") })
	req := httptest.NewRequest("GET", "/?a=1", nil)
	req.Header.Set("X-Probe", "yes")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("status %d", rec.Code)
	}
	body := rec.Body.String()
	for _, want := range []string{"Hostname: ", "Env: SHOAL_TEST_VAR=v1\n", "GET /?a=1 HTTP/1.1\n",
		"RemoteAddr: 192.0.2.1:1234\n", "Host: example.com\n", "X-Probe: yes\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
	// Env is sorted.
	var env []string
	for _, l := range strings.Split(body, "\n") {
		if e, ok := strings.CutPrefix(l, "Env: "); ok {
			env = append(env, e)
		}
	}
	for i := 1; i < len(env); i++ {
		if env[i-1] > env[i] {
			t.Errorf("env not sorted: %q > %q", env[i-1], env[i])
		}
	}
}

func TestHandlerJSON(t *testing.T) {
	t.Setenv("SHOAL_TEST_VAR", "v2")
	h := newHandler(func(int) {})
	req := httptest.NewRequest("GET", "/json", nil)
	req.Header.Set("X-Probe", "yes")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	var w whoami
	if err := json.Unmarshal(rec.Body.Bytes(), &w); err != nil {
		t.Fatal(err)
	}
	if w.Request.Method != "GET" || w.Request.Path != "/json" || w.Request.Headers["X-Probe"][0] != "yes" {
		t.Errorf("request = %+v", w.Request)
	}
	found := false
	for _, kv := range w.Env {
		found = found || kv == "SHOAL_TEST_VAR=v2"
	}
	if !found || w.Hostname == "" || w.IPs == nil {
		t.Errorf("whoami = %+v", w)
	}
}

func TestHandlerHealthExitAndNotFound(t *testing.T) {
	exited := -1
	h := newHandler(func(c int) { exited = c })
	do := func(method, target string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
		return rec
	}
	if rec := do("GET", "/health"); rec.Code != 200 || rec.Body.String() != "ok\n" {
		t.Errorf("/health: %d %q", rec.Code, rec.Body.String())
	}
	if rec := do("GET", "/exit?code=x"); rec.Code != http.StatusBadRequest || exited != -1 {
		t.Errorf("/exit?code=x: %d, exited %d", rec.Code, exited)
	}
	if rec := do("GET", "/exit?code=7"); rec.Code != 200 || exited != 7 {
		t.Errorf("/exit?code=7: %d, exited %d", rec.Code, exited)
	}
	if rec := do("GET", "/nope"); rec.Code != http.StatusNotFound {
		t.Errorf("/nope: %d", rec.Code)
	}
	if rec := do("POST", "/health"); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /health: %d", rec.Code)
	}
}

func TestUDPEcho(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- udpEcho(ctx, "127.0.0.1:0", ready) }()
	addr := <-ready
	c, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping 1")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1024)
	n, err := c.Read(buf)
	host, _ := os.Hostname()
	if err != nil || string(buf[:n]) != host+" ping 1" {
		t.Fatalf("reply %q, %v", buf[:n], err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("udpEcho: %v", err)
	}
}
