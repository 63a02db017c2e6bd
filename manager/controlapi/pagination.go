package controlapi

import (
	"encoding/base64"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
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
//
// A page costs what a page costs: raftstore.PageBounded seeks in the
// narrowest index the filters allow (a service's or a node's tasks, one
// task state, an id prefix) to the token's id and stops one match past the
// page, or after PageVisitMax objects (a short page then, and a token
// naming the last object visited). Only
// the total needs the whole range: it is counted (raftstore.Count, a walk
// of the index without collecting it) on the first page of a walk and
// carried in the token to the pages after it, so reading 100,000 tasks in
// pages of 1,000 counts them once, not a hundred times. A later page
// counts afresh when the carried total was at most RecountMax and the
// range still holds at most RecountMax objects (a bounded walk, about
// 3 ms); otherwise its total is the count when the walk began.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
	RecountMax      = 10_000
	// PageVisitMax bounds the objects one page's walk visits: filters the
	// index cannot narrow that refuse most of a big range get a short (even
	// empty) page and a token to go on with, not a walk of the whole range
	// per call.
	PageVisitMax = 10_000
)

// Token encodings. v3 carries the walk's scope (which list, which
// filters: a token is refused on any other), its total and the last id;
// v2 (total and last id) and v1 (the last id alone), from managers before
// v3, are still accepted with their totals counted afresh: nothing ties
// them to the list that made them.
const (
	pageTokenV1 = "v1:"
	pageTokenV2 = "v2:"
	pageTokenV3 = "v3:"
)

// pageTokenMax bounds a token's length: the tokens this API returns hold
// an id and two numbers, and a longer one is refused before it is decoded
// or echoed in an error.
const pageTokenMax = 512

// pageReq is a checked shoalv1.Page.
type pageReq struct {
	size  int
	after string // last id of the previous page; "" on the first
	total int64  // carried from the walk's first page; -1: count it
	scope string // the walk's pageScope; "" for a v1 or v2 token
}

// parsePage checks a request's page: the size's bounds and a token this API
// made, naming the field at fault.
func parsePage(page *shoalv1.Page) (pageReq, error) {
	p := pageReq{size: int(page.GetPageSize()), total: -1}
	switch {
	case p.size < 0:
		return pageReq{}, errdefs.InvalidArgumentf("page.page_size: %d is negative (1 to %d, or 0 for %d)", p.size, MaxPageSize, DefaultPageSize)
	case p.size > MaxPageSize:
		return pageReq{}, errdefs.InvalidArgumentf("page.page_size: %d is over the maximum of %d (page on with page.page_token)", p.size, MaxPageSize)
	case p.size == 0:
		p.size = DefaultPageSize
	}
	tok := page.GetPageToken()
	if tok == "" {
		return p, nil
	}
	if len(tok) > pageTokenMax {
		return pageReq{}, errdefs.InvalidArgumentf("page.page_token: %d bytes, longer than any token this API returns (at most %d)", len(tok), pageTokenMax)
	}
	bad := errdefs.InvalidArgumentf("page.page_token: %q is not a token this API returned", tok)
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return pageReq{}, bad
	}
	s := string(raw)
	switch {
	case strings.HasPrefix(s, pageTokenV1):
		p.after = strings.TrimPrefix(s, pageTokenV1)
	case strings.HasPrefix(s, pageTokenV2):
		count, after, ok := strings.Cut(strings.TrimPrefix(s, pageTokenV2), ":")
		n, err := strconv.ParseInt(count, 10, 64)
		if !ok || err != nil || n < 0 {
			return pageReq{}, bad
		}
		p.after = after // its total is not tied to this list: count afresh
	case strings.HasPrefix(s, pageTokenV3):
		scope, rest, ok := strings.Cut(strings.TrimPrefix(s, pageTokenV3), ":")
		count, after, ok2 := strings.Cut(rest, ":")
		n, err := strconv.ParseInt(count, 10, 64)
		if !ok || !ok2 || scope == "" || err != nil || n < 0 {
			return pageReq{}, bad
		}
		p.scope, p.total, p.after = scope, n, after
	default:
		return pageReq{}, bad
	}
	return p, nil
}

// pageToken is the token of the page after the one ending with lastID, in
// the walk scope names.
func pageToken(scope string, total int64, lastID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(pageTokenV3 + scope + ":" + strconv.FormatInt(total, 10) + ":" + lastID))
}

// pageScope names a walk: the list (T's type) and its filters, in key
// order, those with an empty value left out (no filter, as the handlers
// read them). A token carries it so that a later page is read with the
// filters its total was counted for.
func pageScope[T raftstore.Object](filters map[string]string) string {
	keys := make([]string, 0, len(filters))
	for k, v := range filters {
		if v != "" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	h := fnv.New64a()
	var zero T
	fmt.Fprintf(h, "%T", zero)
	for _, k := range keys {
		fmt.Fprintf(h, "\x00%s=%s", k, filters[k])
	}
	return strconv.FormatUint(h.Sum64(), 36)
}

// listRange is the index range a list walks and the filters on top of it:
// raftstore.Page's arguments. keep must hold every filter the request
// names (the range only narrows the walk), so that the result is the same
// whatever range is picked.
type listRange[T raftstore.Object] struct {
	index, value string
	keep         func(T) bool
}

// listPage returns the page of rng (the request's filters) that page asks
// for, the next page's token ("" on the last) and the total (see the
// package comment on pages). A token made for another list or other
// filters is refused: its total was counted for them.
func listPage[T raftstore.Object](r raftstore.Reader, page *shoalv1.Page, filters map[string]string, rng listRange[T]) ([]T, string, int64, error) {
	p, err := parsePage(page)
	if err != nil {
		return nil, "", 0, err
	}
	scope := pageScope[T](filters)
	if p.scope != "" && p.scope != scope {
		return nil, "", 0, errdefs.InvalidArgumentf("page.page_token: returned for another list or other filters (list again without a token, or with the filters of the page that returned it)")
	}
	items, more, last := raftstore.PageBounded(r, rng.index, rng.value, p.after, p.size, rng.keep, PageVisitMax)
	total := p.total
	switch {
	case total < 0:
		total = int64(raftstore.Count(r, rng.index, rng.value, rng.keep))
	case total <= RecountMax:
		if n, ok := raftstore.CountAtMost(r, rng.index, rng.value, rng.keep, RecountMax); ok {
			total = int64(n)
		}
	}
	if !more {
		return items, "", total, nil
	}
	return items, pageToken(scope, total, last), total, nil
}
