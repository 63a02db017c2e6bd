package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// GC removes images that have no references and are not in use, then every
// unpacked layer that no remaining image uses (including layers left
// behind by a crash between unpack and commit). inUse is asked about each
// dangling image's digest; a nil inUse means nothing is in use. Layers
// pinned by a pull or load in progress are left alone.
func (s *Store) GC(ctx context.Context, inUse func(digest string) bool) (removed int, freed int64, err error) {
	entries, err := os.ReadDir(filepath.Join(s.dir, layersDir))
	if err != nil {
		return 0, 0, fmt.Errorf("gc: list layers: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()

	next := s.idx.clone()
	for dg, rec := range next.Images {
		if len(rec.References) > 0 || (inUse != nil && inUse(dg)) {
			continue
		}
		delete(next.Images, dg)
		removed++
		s.logger.Info("gc: removing dangling image", "digest", dg)
	}
	if removed > 0 {
		if err := s.writeIndex(next); err != nil {
			return 0, 0, fmt.Errorf("gc: %w", err)
		}
		s.idx = next
	}

	used := s.usedLayers()
	var errs []error
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return removed, freed, err
		}
		diffID := "sha256:" + e.Name()
		if used[diffID] || s.active[diffID] > 0 {
			continue
		}
		var size int64
		if l := s.idx.Layers[diffID]; l != nil {
			size = l.Size
		}
		if err := s.discardLayer(diffID); err != nil {
			errs = append(errs, err)
			continue
		}
		freed += size
		s.logger.Info("gc: removed layer", "layer", diffID, "bytes", size)
	}
	// Forget sizes of layers that are gone.
	for d := range s.idx.Layers {
		if !used[d] && s.active[d] == 0 {
			delete(s.idx.Layers, d)
		}
	}
	if err := s.writeIndex(s.idx); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return removed, freed, fmt.Errorf("gc: %d errors, first: %w", len(errs), errs[0])
	}
	return removed, freed, nil
}
