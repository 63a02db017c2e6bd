package specrules

// Labels checks a labels map under field (e.g. "labels_add") by the rules
// every spec's labels follow: a PatchService checks the labels it adds as
// a full validation checks spec.labels.
func Labels(field string, m map[string]string) Problems {
	var p Problems
	labels(&p, field, m)
	return p
}
