package daemon

import (
	"context"
	"errors"
	"testing"

	"github.com/shoal-dev/shoal/agent/image"
	"github.com/shoal-dev/shoal/metrics"
)

func TestMetricsAddr(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"", "", ""},
		{"10.0.0.1", "10.0.0.1:9323", ""},
		{"10.0.0.1:9100", "10.0.0.1:9100", ""},
		{"[::1]:9100", "[::1]:9100", ""},
		{"node1", "", `--metrics-addr: "node1" is not an IP address`},
		{"10.0.0.1:0", "", `--metrics-addr: bad port "0"`},
	} {
		got, err := metricsAddr(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

type fakePuller struct{ err error }

func (f fakePuller) Get(string) (image.Image, bool) { return image.Image{}, false }
func (f fakePuller) Pull(context.Context, string, image.PullOptions) (image.Image, error) {
	return image.Image{}, f.err
}
func (f fakePuller) LowerDirs(image.Image) []string { return nil }
func (f fakePuller) MarkUsed(string) error          { return nil }

// Pulls are counted by result; a pull abandoned because its task went
// away is no registry failure.
func TestCountingImages(t *testing.T) {
	m := newNodeMetrics()
	m.agent = metrics.NewAgent(m.reg, metrics.AgentConfig{})
	for _, err := range []error{nil, nil, errors.New("unreachable"), context.Canceled} {
		_, _ = countingImages{fakePuller{err: err}, m}.Pull(context.Background(), "x", image.PullOptions{})
	}
	vec, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range vec {
		if mf.GetName() == "shoal_image_pulls_total" {
			for _, s := range mf.GetMetric() {
				got[s.GetLabel()[0].GetValue()] = s.GetCounter().GetValue()
			}
		}
	}
	if got["ok"] != 2 || got["error"] != 1 {
		t.Fatalf("pulls: %v", got)
	}
}
