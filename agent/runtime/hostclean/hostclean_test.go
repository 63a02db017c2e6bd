package hostclean

import (
	"slices"
	"testing"
)

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/a`: "/a", `/a\040b`: "/a b", `/x\134y`: `/x\y`, `/bad\9`: `/bad\9`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func TestMountsUnderOrder(t *testing.T) {
	ents := []mountEntry{
		{mountPoint: "/d"}, {mountPoint: "/d/a"}, {mountPoint: "/d/a/b"}, {mountPoint: "/other"},
		{mountPoint: "/dx"}, {mountPoint: "/d/a"}, // stacked on /d/a, newer
	}
	got := mountsUnder(ents, "/d")
	// Deepest first, the newer of two stacked mounts first; /dx is not below /d.
	want := []string{"/d/a/b", "/d/a", "/d/a", "/d"}
	if !slices.Equal(got, want) {
		t.Errorf("mountsUnder = %v, want %v", got, want)
	}
}

func TestCgroupDirsRefusesRoot(t *testing.T) {
	for _, bad := range []string{"", "/", "relative"} {
		if _, err := CgroupDirs(bad); err == nil {
			t.Errorf("CgroupDirs(%q): no error", bad)
		}
	}
}
