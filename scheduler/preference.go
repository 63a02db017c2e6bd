package scheduler

import (
	"fmt"
	"strings"
)

// Placement strategies (Placement.strategy; "" is StrategySpread).
const (
	StrategySpread  = "spread"
	StrategyBinpack = "binpack"
)

// ParseStrategy checks a placement strategy and returns it with the
// default filled in.
func ParseStrategy(s string) (string, error) {
	switch s {
	case "", StrategySpread:
		return StrategySpread, nil
	case StrategyBinpack:
		return StrategyBinpack, nil
	}
	return "", fmt.Errorf("strategy %q: want %s or %s", s, StrategySpread, StrategyBinpack)
}

// ParseSpread parses a spread preference, "node.labels.<label>" (the CLI's
// "spread=" prefix is accepted too), and returns the label name.
func ParseSpread(pref string) (string, error) {
	key := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(pref), "spread="))
	if len(key) < len(KeyLabelPrefix) || !strings.EqualFold(key[:len(KeyLabelPrefix)], KeyLabelPrefix) {
		return "", fmt.Errorf("spread preference %q: want node.labels.<label>", pref)
	}
	label := key[len(KeyLabelPrefix):]
	if label == "" {
		return "", fmt.Errorf("spread preference %q: empty label name", pref)
	}
	return label, nil
}

// ParseSpreads parses a list of spread preferences, outermost first; an
// error names the index.
func ParseSpreads(prefs []string) ([]string, error) {
	if len(prefs) == 0 {
		return nil, nil
	}
	out := make([]string, 0, len(prefs))
	for i, p := range prefs {
		l, err := ParseSpread(p)
		if err != nil {
			return nil, fmt.Errorf("spread[%d]: %w", i, err)
		}
		out = append(out, l)
	}
	return out, nil
}
