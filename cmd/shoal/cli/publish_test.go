package cli

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestParsePublish: both forms, docker's key spellings, and clear errors.
func TestParsePublish(t *testing.T) {
	for _, c := range []struct {
		in   string
		want *shoalv1.PortConfig
		err  string
	}{
		{"8080:80", &shoalv1.PortConfig{PublishedPort: 8080, TargetPort: 80}, ""},
		{"53:5353/udp", &shoalv1.PortConfig{PublishedPort: 53, TargetPort: 5353, Protocol: "udp"}, ""},
		{"published=8080,target=80,protocol=udp,mode=host", &shoalv1.PortConfig{PublishedPort: 8080, TargetPort: 80, Protocol: "udp", PublishMode: "host"}, ""},
		{"src=1,dst=2,mode=ingress,name=web", &shoalv1.PortConfig{PublishedPort: 1, TargetPort: 2, PublishMode: "ingress", Name: "web"}, ""},
		{"8080", nil, "want PUBLISHED:TARGET"},
		{"0:80", nil, `published port "0" must be 1-65535`},
		{"80:70000", nil, `target port "70000" must be 1-65535`},
		{"80:80/sctp", nil, `protocol must be tcp or udp, got "sctp"`},
		{"published=80", nil, "target= is required"},
		{"target=80", nil, "published= is required"},
		{"published=80,target=80,mode=mesh", nil, `mode must be ingress or host, got "mesh"`},
		{"published=80,target=80,color=red", nil, `unknown key "color"`},
	} {
		got, err := parsePublish("--publish", c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || !proto.Equal(got, c.want) {
			t.Errorf("%q: %v %v, want %v", c.in, got, err, c.want)
		}
	}
}

// TestPublishFlags: -p on create; --publish-add replaces the same
// port/protocol and adds others; --publish-rm removes; update without
// the flags keeps the list.
func TestPublishFlags(t *testing.T) {
	parse := func(update bool, spec *shoalv1.ServiceSpec, args ...string) (*shoalv1.ServiceSpec, error) {
		var f specFlags
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		f.bind(fs, update)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return spec, f.apply(fs, spec)
	}
	keys := func(s *shoalv1.ServiceSpec) string {
		var out []string
		for _, p := range s.GetEndpoint().GetPorts() {
			out = append(out, portKey(p)+">"+p.GetPublishMode())
		}
		return strings.Join(out, " ")
	}
	s, err := parse(false, &shoalv1.ServiceSpec{}, "-p", "8080:80", "--publish", "published=53,target=53,protocol=udp,mode=host")
	if err != nil || keys(s) != "8080/tcp> 53/udp>host" {
		t.Fatalf("create: %q %v", keys(s), err)
	}
	s, err = parse(true, s, "--replicas", "2")
	if err != nil || keys(s) != "8080/tcp> 53/udp>host" {
		t.Fatalf("update without publish flags: %q %v", keys(s), err)
	}
	s, err = parse(true, s, "--publish-add", "published=8080,target=81,mode=host", "--publish-add", "9090:90", "--publish-rm", "53/udp")
	if err != nil || keys(s) != "8080/tcp>host 9090/tcp>" {
		t.Fatalf("update add/rm: %q %v", keys(s), err)
	}
	if _, err = parse(true, s, "--publish-rm", "53/udp"); err == nil || !strings.Contains(err.Error(), "does not publish 53/udp") {
		t.Fatalf("rm of an unpublished port: %v", err)
	}
	s, err = parse(true, s, "-p", "7070:70")
	if err != nil || keys(s) != "7070/tcp>" {
		t.Fatalf("update -p replaces: %q %v", keys(s), err)
	}
}

func TestPortsColumn(t *testing.T) {
	got := portsColumn([]*shoalv1.PortConfig{{PublishedPort: 8080, TargetPort: 80},
		{PublishedPort: 53, TargetPort: 5353, Protocol: "udp", PublishMode: "host"}})
	if want := "*:8080->80/tcp, 53->5353/udp (host)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
