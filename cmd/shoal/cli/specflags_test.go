package cli

import (
	"testing"

	"github.com/spf13/pflag"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestInitFlag: --init on create sets the spec's init; on update
// --init=false clears it and leaving it out keeps it.
func TestInitFlag(t *testing.T) {
	parse := func(update bool, spec *shoalv1.ServiceSpec, args ...string) *shoalv1.ServiceSpec {
		t.Helper()
		var f specFlags
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		f.bind(fs, update)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		if err := f.apply(fs, spec); err != nil {
			t.Fatal(err)
		}
		return spec
	}
	if s := parse(false, &shoalv1.ServiceSpec{}, "--init"); !s.GetTask().GetContainer().GetInit() {
		t.Error("create --init: init not set")
	}
	if s := parse(false, &shoalv1.ServiceSpec{}); s.GetTask().GetContainer().GetInit() {
		t.Error("create: init set without --init")
	}
	withInit := func() *shoalv1.ServiceSpec {
		return &shoalv1.ServiceSpec{Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "x", Init: true}}}
	}
	if s := parse(true, withInit(), "--replicas", "2"); !s.GetTask().GetContainer().GetInit() {
		t.Error("update without --init cleared it")
	}
	if s := parse(true, withInit(), "--init=false"); s.GetTask().GetContainer().GetInit() {
		t.Error("update --init=false kept it")
	}
}
