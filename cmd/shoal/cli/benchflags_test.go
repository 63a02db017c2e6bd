package cli

import (
	"strings"
	"testing"
)

// TestBenchValidateCreateParallel: --create-parallel must be positive
// (an errgroup limit of 0 would block the first CreateService forever,
// and a negative one would lift the limit).
func TestBenchValidateCreateParallel(t *testing.T) {
	ok := benchOptions{nodes: 1, tasks: 1, services: 1, managers: 1, joinParallel: 1, wave: 1, profileSeconds: 1, createParallel: 1}
	if err := ok.validate(); err != nil {
		t.Fatalf("valid options refused: %v", err)
	}
	for _, n := range []int{0, -1} {
		o := ok
		o.createParallel = n
		if err := o.validate(); err == nil || !strings.Contains(err.Error(), "--create-parallel") {
			t.Errorf("--create-parallel %d: err %v, want one naming the flag", n, err)
		}
	}
}
