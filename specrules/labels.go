package specrules

import "fmt"

// Labels checks a labels map under field (e.g. "labels_add") by the rules
// every spec's labels follow: a PatchService checks the labels it adds as
// a full validation checks spec.labels.
func Labels(field string, m map[string]string) Problems {
	var p Problems
	labels(&p, field, m)
	return p
}

// LabelKeys checks label keys to remove under field (e.g. "labels_rm"):
// at most MaxLabels of them, each 1 to MaxLabelKey bytes, so that a
// removal (which a PatchService's raft entry carries as sent) is no
// larger than a spec's labels could be. Any key a labels map can hold
// passes, one of an older release's laxer rules included.
func LabelKeys(field string, keys []string) Problems {
	var p Problems
	if len(keys) > MaxLabels {
		p.Add(field, "%d keys, at most %d", len(keys), MaxLabels)
		return p
	}
	for i, k := range keys {
		if k == "" || len(k) > MaxLabelKey {
			p.Add(fmt.Sprintf("%s[%d]", field, i), "a label key is 1 to %d bytes, got %d", MaxLabelKey, len(k))
		}
	}
	return p
}
