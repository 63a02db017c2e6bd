package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestRevokeGuard(t *testing.T) {
	now := time.Now()
	later := timestamppb.New(now.Add(time.Hour))
	admins := []*shoalv1.AdminCertificate{
		{Name: "admin", Serial: "a", NotAfter: later},
		{Name: "ops", Serial: "b", NotAfter: later},
		{Name: "old", Serial: "c", Revoked: true, NotAfter: later},
		{Name: "gone", Serial: "d", NotAfter: timestamppb.New(now.Add(-time.Hour))},
	}
	for _, tc := range []struct {
		name, target, own string
		admins            []*shoalv1.AdminCertificate
		err               string
	}{
		{"another while two are usable", "ops", "a", admins, ""},
		{"own certificate", "admin", "a", admins, "this command runs with"},
		{"last usable", "admin", "", admins[:1], "last usable"},
		{"last usable, others revoked or expired", "admin", "", []*shoalv1.AdminCertificate{admins[0], admins[2], admins[3]}, "last usable"},
		{"unknown name: the server answers", "nobody", "a", admins, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := revokeGuard(tc.admins, tc.target, tc.own, now)
			if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("revokeGuard = %v, want %q", err, tc.err)
			}
		})
	}
}

func TestParseLongDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"90d": 90 * 24 * time.Hour, "20s": 20 * time.Second, "720h": 720 * time.Hour} {
		if got, err := parseLongDuration("--x", in); err != nil || got != want {
			t.Errorf("%q: %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "0", "-1h", "xd", "0d", "1y"} {
		if _, err := parseLongDuration("--x", in); err == nil || !strings.Contains(err.Error(), "--x") {
			t.Errorf("%q: %v, want an error naming the flag", in, err)
		}
	}
}

func TestPrintAdminCerts(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	a := &app{out: &b}
	err := a.printAdminCerts([]*shoalv1.AdminCertificate{
		{Name: "admin", Serial: "a1", CreatedAt: timestamppb.New(now), NotAfter: timestamppb.New(now.Add(time.Hour))},
		{Name: "ops", Serial: "b2", CreatedAt: timestamppb.New(now), NotAfter: timestamppb.New(now.Add(time.Hour)), Revoked: true, RevokedAt: timestamppb.New(now)},
	}, listFlags{format: "table"}, now)
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"NAME", "admin", "a1", "active", "ops", "revoked 2026-01-01T00:00:00Z"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}
