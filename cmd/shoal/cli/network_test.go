package cli

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func applyFlags(t *testing.T, update bool, spec *shoalv1.ServiceSpec, rmIDs map[string]string, args ...string) (*shoalv1.ServiceSpec, error) {
	t.Helper()
	var f specFlags
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	f.bind(fs, update)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	f.networkRmIDs = rmIDs
	return spec, f.apply(fs, spec)
}

func netList(s *shoalv1.ServiceSpec) string {
	var out []string
	for _, n := range s.GetTask().GetNetworks() {
		out = append(out, n.GetTarget()+"["+strings.Join(n.GetAliases(), ",")+"]")
	}
	return strings.Join(out, " ")
}

// TestNetworkFlags: --network NAME[,alias=A] (and docker's name= form) on
// create; --network-add/--network-rm on update (rm by name matches the
// stored id); --endpoint-mode.
func TestNetworkFlags(t *testing.T) {
	s, err := applyFlags(t, false, &shoalv1.ServiceSpec{}, nil, "--network", "front,alias=web,alias=www", "--network", "name=back", "--endpoint-mode", "dnsrr")
	if err != nil {
		t.Fatal(err)
	}
	if got := netList(s); got != "front[web,www] back[]" || s.GetEndpoint().GetMode() != "dnsrr" {
		t.Fatalf("create: %q mode %q", got, s.GetEndpoint().GetMode())
	}
	for _, bad := range [][]string{{"--network", ",alias=x"}, {"--network", "a,alias="}, {"--network", "a,foo=1"}, {"--endpoint-mode", "rr"}} {
		if _, err := applyFlags(t, false, &shoalv1.ServiceSpec{}, nil, bad...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	stored := func() *shoalv1.ServiceSpec {
		return &shoalv1.ServiceSpec{Task: &shoalv1.TaskSpec{Networks: []*shoalv1.NetworkAttachmentConfig{{Target: "id-front"}, {Target: "id-back"}}}}
	}
	s, err = applyFlags(t, true, stored(), map[string]string{"front": "id-front"}, "--network-rm", "front", "--network-add", "extra,alias=x")
	if err != nil {
		t.Fatal(err)
	}
	if got := netList(s); got != "id-back[] extra[x]" {
		t.Fatalf("update: %q", got)
	}
	if _, err := applyFlags(t, true, stored(), nil, "--network-rm", "nosuch"); err == nil || !strings.Contains(err.Error(), "not attached") {
		t.Fatalf("rm of an unattached network: %v", err)
	}
	if s, _ := applyFlags(t, true, stored(), nil, "--replicas", "2"); netList(s) != "id-front[] id-back[]" {
		t.Fatal("update without network flags changed the networks")
	}
}
