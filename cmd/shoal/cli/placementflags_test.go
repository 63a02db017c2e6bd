package cli

import (
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestPlacementFlags(t *testing.T) {
	parse := func(update bool, spec *shoalv1.ServiceSpec, args ...string) (*shoalv1.ServiceSpec, error) {
		t.Helper()
		var f specFlags
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		f.bind(fs, update)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return spec, f.apply(fs, spec)
	}
	s, err := parse(false, &shoalv1.ServiceSpec{}, "--placement-pref", "spread=node.labels.region", "--placement-pref", "spread=node.labels.zone",
		"--placement-strategy", "binpack", "--auto-rebalance")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.GetTask().GetPlacement().GetSpread(), []string{"node.labels.region", "node.labels.zone"}; !reflect.DeepEqual(got, want) {
		t.Errorf("create: spread = %v, want %v", got, want)
	}
	if s.GetTask().GetPlacement().GetStrategy() != "binpack" || !s.GetAutoRebalance() {
		t.Errorf("create: strategy %q, auto rebalance %v", s.GetTask().GetPlacement().GetStrategy(), s.GetAutoRebalance())
	}

	// Update: edits the list, keeps what is not named.
	s, err = parse(true, s, "--placement-pref-rm", "spread=node.labels.region", "--placement-pref-add", "spread=node.labels.rack")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.GetTask().GetPlacement().GetSpread(), []string{"node.labels.zone", "node.labels.rack"}; !reflect.DeepEqual(got, want) {
		t.Errorf("update: spread = %v, want %v", got, want)
	}
	if s.GetTask().GetPlacement().GetStrategy() != "binpack" || !s.GetAutoRebalance() {
		t.Error("update without --placement-strategy/--auto-rebalance changed them")
	}
	if s, err = parse(true, s, "--auto-rebalance=false", "--placement-strategy", "spread"); err != nil || s.GetAutoRebalance() || s.GetTask().GetPlacement().GetStrategy() != "spread" {
		t.Errorf("update --auto-rebalance=false --placement-strategy spread: %v %v %v", err, s.GetAutoRebalance(), s.GetTask().GetPlacement().GetStrategy())
	}

	for _, bad := range [][]string{
		{"--placement-pref", "node.labels.zone"},
		{"--placement-pref", "spread=node.hostname"},
		{"--placement-strategy", "random"},
	} {
		if _, err := parse(false, &shoalv1.ServiceSpec{}, bad...); err == nil || !strings.Contains(err.Error(), bad[0]) {
			t.Errorf("%v: error %v, want one naming %s", bad, err, bad[0])
		}
	}
}
