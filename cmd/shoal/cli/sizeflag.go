package cli

import "strconv"

// sizeFlag is a flag holding a size in bytes, written as parseSize reads
// it (512m, 16g, 1.5GiB).
type sizeFlag struct{ v *int64 }

func (f sizeFlag) String() string {
	if f.v == nil || *f.v == 0 {
		return ""
	}
	return strconv.FormatInt(*f.v, 10)
}

func (f sizeFlag) Set(s string) error {
	n, err := parseSize("size", s)
	if err != nil {
		return err
	}
	*f.v = n
	return nil
}

func (f sizeFlag) Type() string { return "size" }
