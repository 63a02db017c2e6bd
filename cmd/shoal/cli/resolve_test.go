package cli

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
)

func TestShortImage(t *testing.T) {
	for in, want := range map[string]string{
		"demo:latest":                "demo:latest",
		"reg:5000/app:1@sha256:abcd": "reg:5000/app:1",
		"reg:5000/app@sha256:abcd":   "reg:5000/app@sha256:abcd", // no tag to show
		"app@sha256:abcd":            "app@sha256:abcd",
	} {
		if got := shortImage(in); got != want {
			t.Errorf("shortImage(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPinImageUnreachableRegistryWarns(t *testing.T) {
	// A port nothing listens on: the lookup fails at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var out, errOut bytes.Buffer
	a := &app{out: &out, errOut: &errOut}
	ref := addr + "/app:1"
	if got := a.pinImage(context.Background(), ref); got != ref {
		t.Errorf("pinImage = %q, want the reference unchanged", got)
	}
	if !strings.Contains(errOut.String(), "could not be pinned") {
		t.Errorf("no warning: %q", errOut.String())
	}
	errOut.Reset()
	pinned := ref + "@sha256:0123456789012345678901234567890123456789012345678901234567890123"
	if got := a.pinImage(context.Background(), pinned); got != pinned || errOut.Len() != 0 {
		t.Errorf("pinned ref changed to %q (warning %q)", got, errOut.String())
	}
}

func TestParseMount(t *testing.T) {
	m, err := parseMount("type=bind,source=/srv/data,target=/data,readonly")
	if err != nil || m.GetType() != "bind" || m.GetSource() != "/srv/data" || m.GetTarget() != "/data" || !m.GetReadOnly() {
		t.Errorf("bind: %v %v", m, err)
	}
	m, err = parseMount("type=tmpfs,dst=/tmp")
	if err != nil || m.GetType() != "tmpfs" || m.GetTarget() != "/tmp" || m.GetReadOnly() {
		t.Errorf("tmpfs: %v %v", m, err)
	}
	for _, bad := range []string{"type=bind,source=/x", "type=bind,size=1,target=/x"} {
		if _, err := parseMount(bad); err == nil {
			t.Errorf("parseMount(%q): no error", bad)
		}
	}
}
