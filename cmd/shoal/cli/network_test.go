package cli

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/errdefs"

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

// netControl is the fake manager's network side.
type netControl struct {
	nmu      sync.Mutex // guards the fields below
	networks []*shoalv1.Network
	created  []*shoalv1.NetworkSpec
	removed  []string
}

func (f *fakeManager) CreateNetwork(_ context.Context, req *shoalv1.CreateNetworkRequest) (*shoalv1.CreateNetworkResponse, error) {
	f.nmu.Lock()
	defer f.nmu.Unlock()
	f.created = append(f.created, req.GetSpec())
	n := &shoalv1.Network{Meta: &shoalv1.Meta{Id: "net" + req.GetSpec().GetName()}, Spec: req.GetSpec(), Subnet: "10.220.0.0/24", Gateway: "10.220.0.1", Vni: 4096}
	f.networks = append(f.networks, n)
	return &shoalv1.CreateNetworkResponse{Network: n}, nil
}

func (f *fakeManager) ListNetworks(_ context.Context, req *shoalv1.ListNetworksRequest) (*shoalv1.ListNetworksResponse, error) {
	f.nmu.Lock()
	defer f.nmu.Unlock()
	return &shoalv1.ListNetworksResponse{Networks: f.networks}, nil
}

func (f *fakeManager) GetNetwork(_ context.Context, req *shoalv1.GetNetworkRequest) (*shoalv1.GetNetworkResponse, error) {
	f.nmu.Lock()
	defer f.nmu.Unlock()
	for _, n := range f.networks {
		if n.GetMeta().GetId() == req.GetRef() || n.GetSpec().GetName() == req.GetRef() {
			return &shoalv1.GetNetworkResponse{Network: n}, nil
		}
	}
	return nil, errdefs.NotFoundf("network %q: not found", req.GetRef())
}

func (f *fakeManager) RemoveNetwork(_ context.Context, req *shoalv1.RemoveNetworkRequest) (*shoalv1.RemoveNetworkResponse, error) {
	f.nmu.Lock()
	defer f.nmu.Unlock()
	if req.GetRef() == "busy" {
		return nil, errdefs.FailedPreconditionf("network %q is in use by service(s) web", req.GetRef())
	}
	f.removed = append(f.removed, req.GetRef())
	return &shoalv1.RemoveNetworkResponse{}, nil
}

func (f *fakeManager) PruneNetworks(context.Context, *shoalv1.PruneNetworksRequest) (*shoalv1.PruneNetworksResponse, error) {
	return &shoalv1.PruneNetworksResponse{Removed: []string{"old1", "old2"}}, nil
}

// TestNetworkCommands: create sends the flags as a spec, ls shows the
// allocation, rm reports the manager's refusal, prune lists what went, and
// service update --network-rm by name drops the stored id.
func TestNetworkCommands(t *testing.T) {
	c := newCLICluster(t)
	code, out, errOut := c.run("network", "create", "--subnet", "10.9.0.0/24", "--gateway", "10.9.0.254", "--label", "env=prod",
		"--internal", "--attachable", "--mtu", "1400", "front")
	if code != 0 || strings.TrimSpace(out) != "netfront" {
		t.Fatalf("create: %d %q %q", code, out, errOut)
	}
	got := c.mgr.created[0]
	want := &shoalv1.NetworkSpec{Name: "front", Driver: "overlay", Subnet: "10.9.0.0/24", Gateway: "10.9.0.254", Labels: map[string]string{"env": "prod"},
		Internal: true, Attachable: true, Mtu: 1400}
	if !proto.Equal(got, want) {
		t.Fatalf("spec %v, want %v", got, want)
	}
	code, out, _ = c.run("network", "ls")
	if code != 0 || !strings.Contains(out, "front") || !strings.Contains(out, "10.220.0.0/24") || !strings.Contains(out, "4096") || !strings.Contains(out, "internal,attachable,mtu=1400") {
		t.Fatalf("ls: %q", out)
	}
	if code, out, _ = c.run("network", "ls", "-q"); code != 0 || strings.TrimSpace(out) != "netfront" {
		t.Fatalf("ls -q: %q", out)
	}
	if code, _, errOut = c.run("network", "rm", "busy"); code == 0 || !strings.Contains(errOut, "in use by service(s) web") {
		t.Fatalf("rm busy: %d %q", code, errOut)
	}
	if code, out, _ = c.run("network", "prune"); code != 0 || out != "old1\nold2\n" {
		t.Fatalf("prune: %q", out)
	}
	// protojson varies its white space on purpose: decode, don't match text.
	code, out, _ = c.run("network", "inspect", "front")
	var inspected []struct {
		Vni json.Number `json:"vni"`
	}
	if err := json.Unmarshal([]byte(out), &inspected); code != 0 || err != nil || len(inspected) != 1 || inspected[0].Vni != "4096" {
		t.Fatalf("inspect: %v %q", err, out)
	}

	c.mgr.services = []*shoalv1.Service{{Meta: &shoalv1.Meta{Id: "svcweb", Version: 7}, SpecVersion: 1,
		Spec: &shoalv1.ServiceSpec{Name: "web", Replicas: 1, Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:1"},
			Networks: []*shoalv1.NetworkAttachmentConfig{{Target: "netfront"}}}}}}
	code, _, errOut = c.run("service", "update", "--detach", "--network-rm", "front", "--network-add", "back,alias=api", "web")
	if code != 0 {
		t.Fatalf("update: %s", errOut)
	}
	req := c.mgr.updates[len(c.mgr.updates)-1]
	if got := netList(req.GetSpec()); got != "back[api]" {
		t.Fatalf("update networks %q, want back[api]", got)
	}
}
