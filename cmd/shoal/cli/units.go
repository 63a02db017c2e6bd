package cli

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// parseSize reads sizes such as 512, 512k, 256m, 1g, 1.5GiB, 2GB into bytes
// (binary multiples, as docker does).
func parseSize(flag, s string) (int64, error) {
	bad := fmt.Errorf("%s: invalid size %q (use e.g. 512m, 2g)", flag, s)
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "ib"), "b")
	mult := float64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k':
			mult, t = 1<<10, t[:n-1]
		case 'm':
			mult, t = 1<<20, t[:n-1]
		case 'g':
			mult, t = 1<<30, t[:n-1]
		case 't':
			mult, t = 1<<40, t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, bad
	}
	return int64(v * mult), nil
}

// parseCPUs reads "0.5" CPUs into nano CPUs.
func parseCPUs(flag, s string) (int64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("%s: invalid CPU count %q (use e.g. 0.5, 2)", flag, s)
	}
	return int64(v * 1e9), nil
}
