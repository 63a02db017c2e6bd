package cli

import "testing"

func TestSizeFlag(t *testing.T) {
	var v int64
	f := sizeFlag{&v}
	if err := f.Set("2g"); err != nil || v != 2<<30 {
		t.Errorf("Set(2g): %d, %v", v, err)
	}
	if err := f.Set("512KiB"); err != nil || v != 512<<10 || f.String() != "524288" {
		t.Errorf("Set(512KiB): %d %q, %v", v, f.String(), err)
	}
	if err := f.Set("lots"); err == nil {
		t.Error("Set(lots) accepted")
	}
}
