package logs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkRead backs the claim in doc.go that a tail costs the lines
// wanted, not the size of the log: tail 100 of a 1 MB and a 16 MB log
// should take about the same time, reading everything should not.
func BenchmarkRead(b *testing.B) {
	for _, mb := range []int{1, 16} {
		path := filepath.Join(b.TempDir(), "task.log")
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		rec := jsonLine(t0, "stdout", strings.Repeat("x", 80)+"\n")
		for n := 0; n < mb<<20; n += len(rec) {
			f.WriteString(rec)
		}
		f.Close()
		for _, tc := range []struct {
			name string
			tail int
		}{{"tail100", 100}, {"all", AllLines}} {
			b.Run(fmt.Sprintf("%dMB/%s", mb, tc.name), func(b *testing.B) {
				for b.Loop() {
					n := 0
					if err := Read(context.Background(), path, Options{Tail: tc.tail}, func(Entry) error { n++; return nil }); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
