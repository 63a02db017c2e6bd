package controlapi

import (
	"encoding/base64"
	"slices"
	"strings"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Lists (nodes, services, tasks) page in a stable order, by object id:
// a page token names the last id of the page before (opaque to callers),
// so objects created or removed between pages neither shift nor repeat the
// others. page_size 0 (or absent) is DefaultPageSize, as Google's API
// guidelines (AIP-158) have it: a caller that forgets to page gets one
// bounded page and a next_page_token, not 100,000 tasks in one reply. A
// caller that wants everything pages through (the CLI does, with
// client.ListNodes etc.). A page_size over MaxPageSize is refused, naming
// the field.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// pageTokenPrefix versions the token's encoding.
const pageTokenPrefix = "v1:"

// paginate returns the page of items (matching the filters already) that
// page asks for, the token of the next page ("" on the last) and the
// count of all items.
func paginate[T interface{ GetMeta() *shoalv1.Meta }](items []T, page *shoalv1.Page) ([]T, string, int64, error) {
	total := int64(len(items))
	size := int(page.GetPageSize())
	switch {
	case size < 0:
		return nil, "", 0, errdefs.InvalidArgumentf("page.page_size: %d is negative (1 to %d, or 0 for %d)", size, MaxPageSize, DefaultPageSize)
	case size > MaxPageSize:
		return nil, "", 0, errdefs.InvalidArgumentf("page.page_size: %d is over the maximum of %d (page on with page.page_token)", size, MaxPageSize)
	case size == 0:
		size = DefaultPageSize
	}
	after := ""
	if tok := page.GetPageToken(); tok != "" {
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || !strings.HasPrefix(string(raw), pageTokenPrefix) {
			return nil, "", 0, errdefs.InvalidArgumentf("page.page_token: %q is not a token this API returned", tok)
		}
		after = strings.TrimPrefix(string(raw), pageTokenPrefix)
	}
	id := func(t T) string { return t.GetMeta().GetId() }
	sorted := slices.IsSortedFunc(items, func(a, b T) int { return strings.Compare(id(a), id(b)) })
	if !sorted {
		items = slices.Clone(items)
		slices.SortFunc(items, func(a, b T) int { return strings.Compare(id(a), id(b)) })
	}
	start := 0
	if after != "" {
		start, _ = slices.BinarySearchFunc(items, after, func(t T, s string) int { return strings.Compare(id(t), s) })
		if start < len(items) && id(items[start]) == after {
			start++
		}
	}
	rest := items[start:]
	if len(rest) <= size {
		return rest, "", total, nil
	}
	out := rest[:size]
	next := base64.RawURLEncoding.EncodeToString([]byte(pageTokenPrefix + id(out[len(out)-1])))
	return out, next, total, nil
}
