package health

import (
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestResolve(t *testing.T) {
	imgShell := &ImageCheck{Test: []string{"CMD-SHELL", "curl -f localhost"}, Interval: 5 * time.Second, Retries: 7}
	tests := []struct {
		name    string
		spec    *shoalv1.HealthCheck
		img     *ImageCheck
		want    Check
		ok      bool
		wantErr string
	}{
		{name: "nothing anywhere"},
		{name: "none disables the image's", spec: &shoalv1.HealthCheck{Type: "none"}, img: imgShell},
		{name: "image NONE", img: &ImageCheck{Test: []string{"NONE"}}},
		{name: "image CMD-SHELL with its timings", img: imgShell, ok: true,
			want: Check{Kind: KindExec, Command: []string{"/bin/sh", "-c", "curl -f localhost"}, Interval: 5 * time.Second, Timeout: DefaultTimeout, Retries: 7}},
		{name: "image CMD", img: &ImageCheck{Test: []string{"CMD", "/probe", "x"}}, ok: true,
			want: Check{Kind: KindExec, Command: []string{"/probe", "x"}, Interval: DefaultInterval, Timeout: DefaultTimeout, Retries: DefaultRetries}},
		{name: "spec timings override the image's", spec: &shoalv1.HealthCheck{IntervalMs: 1000, StartPeriodMs: 2500}, img: imgShell, ok: true,
			want: Check{Kind: KindExec, Command: []string{"/bin/sh", "-c", "curl -f localhost"}, Interval: time.Second, Timeout: DefaultTimeout, StartPeriod: 2500 * time.Millisecond, Retries: 7}},
		{name: "spec exec one element is shell", spec: &shoalv1.HealthCheck{Type: "exec", Command: []string{"test -f /ok"}}, img: imgShell, ok: true,
			want: Check{Kind: KindExec, Command: []string{"/bin/sh", "-c", "test -f /ok"}, Interval: 5 * time.Second, Timeout: DefaultTimeout, Retries: 7}},
		{name: "spec exec argv", spec: &shoalv1.HealthCheck{Type: "exec", Command: []string{"/probe", "ok"}, TimeoutMs: 200, Retries: 1}, ok: true,
			want: Check{Kind: KindExec, Command: []string{"/probe", "ok"}, Interval: DefaultInterval, Timeout: 200 * time.Millisecond, Retries: 1}},
		{name: "http default path", spec: &shoalv1.HealthCheck{Type: "http", Port: 8080}, ok: true,
			want: Check{Kind: KindHTTP, Port: 8080, Path: "/", Interval: DefaultInterval, Timeout: DefaultTimeout, Retries: DefaultRetries}},
		{name: "tcp", spec: &shoalv1.HealthCheck{Type: "tcp", Port: 6379}, ok: true,
			want: Check{Kind: KindTCP, Port: 6379, Interval: DefaultInterval, Timeout: DefaultTimeout, Retries: DefaultRetries}},
		{name: "exec without command", spec: &shoalv1.HealthCheck{Type: "exec"}, wantErr: "needs a command"},
		{name: "http without port", spec: &shoalv1.HealthCheck{Type: "http"}, wantErr: "out of range"},
		{name: "unknown type", spec: &shoalv1.HealthCheck{Type: "grpc"}, wantErr: "unknown type"},
		{name: "image unknown test", img: &ImageCheck{Test: []string{"RUN", "x"}}, wantErr: "unknown test"},
		{name: "image CMD empty", img: &ImageCheck{Test: []string{"CMD"}}, wantErr: "without a command"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := Resolve(tc.spec, tc.img)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || ok != tc.ok {
				t.Fatalf("ok %v err %v, want ok %v", ok, err, tc.ok)
			}
			if !ok {
				return
			}
			if got.Kind != tc.want.Kind || !slices.Equal(got.Command, tc.want.Command) || got.Path != tc.want.Path || got.Port != tc.want.Port ||
				got.Interval != tc.want.Interval || got.Timeout != tc.want.Timeout || got.StartPeriod != tc.want.StartPeriod || got.Retries != tc.want.Retries {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	if got := Truncate("  ok\n"); got != "ok" {
		t.Errorf("trim: %q", got)
	}
	long := strings.Repeat("é", MaxOutput) // 2 bytes each
	got := Truncate(long)
	if len(got) > MaxOutput || !strings.HasSuffix(got, "[truncated]") || !utf8.ValidString(got) {
		t.Errorf("len %d, suffix %q, valid %v", len(got), got[len(got)-20:], utf8.ValidString(got))
	}
	exact := strings.Repeat("a", MaxOutput)
	if Truncate(exact) != exact {
		t.Error("exactly MaxOutput bytes must be kept whole")
	}
}
