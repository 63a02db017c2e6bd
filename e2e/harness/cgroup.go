package harness

import (
	"os"
	"regexp"
	"slices"

	"github.com/shoal-dev/shoal/agent/runtime/hostclean"
)

// CgroupPrefix starts the name of every host's cgroup parent:
// /shoal-e2e-<fabric id>-<host>. Sweep removes those whose fabric has no
// live owner.
const CgroupPrefix = "shoal-e2e-"

var cgroupNameRe = regexp.MustCompile(`^` + regexp.QuoteMeta(CgroupPrefix) + `([0-9a-f]{6})-[a-z0-9]{1,8}$`)

// harnessCgroups maps fabric ids to the host cgroup parents
// (/shoal-e2e-<id>-<host>) found at the top of any hierarchy.
func harnessCgroups() (map[string][]string, error) {
	roots, err := hostclean.CgroupRoots()
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, r := range roots {
		ents, err := os.ReadDir(r)
		if err != nil {
			continue
		}
		for _, e := range ents {
			m := cgroupNameRe.FindStringSubmatch(e.Name())
			if m == nil || !e.IsDir() {
				continue
			}
			p := "/" + e.Name()
			if !slices.Contains(out[m[1]], p) {
				out[m[1]] = append(out[m[1]], p)
			}
		}
	}
	return out, nil
}
