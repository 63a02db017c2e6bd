package controlapi

import (
	"fmt"
	"github.com/shoal-dev/shoal/errdefs"
	"sort"
	"strings"

	"github.com/shoal-dev/shoal/raftstore"
)

// checkFilters rejects filter keys a list call does not know, so that a typo
// is an error and not a silently unfiltered list.
func checkFilters(f map[string]string, known ...string) error {
	for k := range f {
		ok := false
		for _, kk := range known {
			if k == kk {
				ok = true
				break
			}
		}
		if !ok {
			sort.Strings(known)
			return errdefs.InvalidArgumentf("filters: unknown key %q (want one of %s)", k, strings.Join(known, ", "))
		}
	}
	return nil
}

// enumIs compares an enum name such as "NODE_STATE_READY" with a short,
// case-insensitive value such as "ready".
func enumIs(enumName, v string) bool {
	v = strings.ToUpper(strings.ReplaceAll(v, "-", "_"))
	return enumName == v || strings.HasSuffix(enumName, "_"+v)
}

// labelMatches matches "k" (present) or "k=v".
func labelMatches(labels map[string]string, f string) bool {
	k, v, hasV := strings.Cut(f, "=")
	got, ok := labels[k]
	return ok && (!hasV || got == v)
}

func notFound(kind, id string) error {
	return fmt.Errorf("%s %q: %w", kind, id, raftstore.ErrNotFound)
}
