package raftstore

import (
	"strings"
)

// scanner is implemented by the package's readers to walk one index range in
// id order from a seek, without building the whole range first. Readers of
// other packages (fakes) fall back to Find/List through scanReader.
type scanner interface {
	scan(kind Kind, index, value, after string, fn func(Object) bool)
}

// Page returns, in id order, up to n objects of type T in the range
// (index, value) whose id sorts after after and that keep accepts (nil
// keeps every object); more says whether another such object follows the
// page. The range is IndexID with value an id prefix ("" for every object
// of the kind), or a secondary index of the kind with value its exact value
// (as Find). On a store view the call seeks in the index to after and stops
// one match past the page: it costs the objects it visits (the page, and
// whatever keep refuses on the way), plus a seek, whatever the size of the
// table. after need not name an existing object (it may have been deleted
// since the previous page, or be any string a caller sent).
func Page[T Object](r Reader, index, value, after string, n int, keep func(T) bool) (page []T, more bool) {
	page, more, _ = PageBounded(r, index, value, after, n, keep, 0)
	return page, more
}

// PageBounded is Page visiting at most visits objects of the range (0: no
// bound), so that what one call costs does not grow with the range when
// keep refuses most of it. When the bound stops the walk short of a full
// page, more is true and the page may be short, even empty. last is the id
// the next page resumes after (the page's last id, or the last object
// visited when the bound stopped the walk: everything between them was
// refused; "" when more is false).
func PageBounded[T Object](r Reader, index, value, after string, n int, keep func(T) bool, visits int) (page []T, more bool, last string) {
	if n < 0 {
		n = 0
	}
	visited := 0
	scanReader(r, kindFor[T](), index, value, after, func(o Object) bool {
		if visits > 0 && visited == visits {
			more = true
			return false
		}
		visited++
		t, ok := o.(T)
		if !ok || (keep != nil && !keep(t)) {
			last = o.GetMeta().GetId()
			return true
		}
		if len(page) == n {
			more = true
			return false
		}
		page = append(page, t)
		last = o.GetMeta().GetId()
		return true
	})
	if !more {
		last = ""
	}
	return page, more, last
}

// Count returns how many objects of type T in the range (index, value), as
// for Page, keep accepts. It walks the range without collecting it: one
// index step (and one keep call) per object in the range, no allocation.
func Count[T Object](r Reader, index, value string, keep func(T) bool) int {
	n := 0
	scanReader(r, kindFor[T](), index, value, "", func(o Object) bool {
		if t, ok := o.(T); ok && (keep == nil || keep(t)) {
			n++
		}
		return true
	})
	return n
}

// CountAtMost is Count giving up after visiting max objects of the range:
// complete is false (and n meaningless) when the range holds more. It
// bounds what a fresh count may cost.
func CountAtMost[T Object](r Reader, index, value string, keep func(T) bool, max int) (n int, complete bool) {
	visited := 0
	complete = true
	scanReader(r, kindFor[T](), index, value, "", func(o Object) bool {
		if visited == max {
			complete = false
			return false
		}
		visited++
		if t, ok := o.(T); ok && (keep == nil || keep(t)) {
			n++
		}
		return true
	})
	return n, complete
}

// scanReader calls fn for each object of the range whose id sorts after
// after, in id order, until fn returns false.
func scanReader(r Reader, kind Kind, index, value, after string, fn func(Object) bool) {
	if index == "" {
		index = IndexID
	}
	if s, ok := r.(scanner); ok {
		s.scan(kind, index, value, after, fn)
		return
	}
	scanSlice(r, kind, index, value, after, fn)
}

// scanSlice is scanReader over a Reader's Find or List: correct for any
// Reader, at the cost of building the whole range.
func scanSlice(r Reader, kind Kind, index, value, after string, fn func(Object) bool) {
	var (
		objs    []Object
		inRange func(Object) bool
	)
	if index == IndexID {
		objs = r.List(kind)
		inRange = func(o Object) bool { return strings.HasPrefix(o.GetMeta().GetId(), value) }
	} else {
		ix := tableDefs[kind].indexOrNil(index)
		if ix == nil {
			return
		}
		// Another Reader's Find need not match exactly (go-memdb's
		// matched by key prefix, so a value holding a NUL matched another
		// value's key followed by an id): the check keeps the range exact.
		objs = r.Find(kind, index, value)
		inRange = func(o Object) bool {
			got, ok := ix(o)
			return ok && got == value
		}
	}
	for _, o := range objs {
		id := o.GetMeta().GetId()
		if !inRange(o) {
			continue
		}
		if id <= after {
			continue
		}
		if !fn(o) {
			return
		}
	}
}

// scan seeks in the tables' trees. The id tree is in id order; a
// secondary index's keys are (value, id), so the objects of one value are
// contiguous and in id order, and (value, after) is where the page after
// after starts. The walk stops at the first object out of the range. The
// check that ids sort after after is kept in the loop: the seek lands on
// after itself when it exists, and the check skips it.
func (v *view) scan(kind Kind, index, value, after string, fn func(Object) bool) {
	visit := func(o Object) bool {
		if o.GetMeta().GetId() <= after {
			return true
		}
		return fn(o)
	}
	if index == IndexID {
		from := value
		if after > from {
			from = after
		}
		v.txn.ascendID(kind, from, func(o Object) bool {
			return strings.HasPrefix(o.GetMeta().GetId(), value) && visit(o)
		})
		return
	}
	v.txn.ascendIndex(kind, index, value, after, visit)
}

// scan on a WriteTx seeks in its base view while the tx has not touched the
// kind; otherwise the overlay decides and the range is built through Find.
func (tx *writeTx) scan(kind Kind, index, value, after string, fn func(Object) bool) {
	if !tx.hasTouched(kind) {
		tx.base.scan(kind, index, value, after, fn)
		return
	}
	scanSlice(tx, kind, index, value, after, fn)
}

// indexOrNil is a kind's extractor for a secondary index, nil for an unknown
// kind (def nil) or index.
func (def *tableDef) indexOrNil(index string) indexFunc {
	if def == nil {
		return nil
	}
	return def.indexes[index]
}
