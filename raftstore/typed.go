package raftstore

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// ErrAmbiguous is returned by ResolveRef when an id prefix matches more than
// one object.
var ErrAmbiguous error = &invalidArgumentError{"ambiguous reference"}

// KindOf returns the table an object belongs in, or "" for a type the store
// does not hold. It works on typed nil pointers too.
func KindOf(o Object) Kind {
	switch o.(type) {
	case *shoalv1.Cluster:
		return KindCluster
	case *shoalv1.Node:
		return KindNode
	case *shoalv1.Service:
		return KindService
	case *shoalv1.Task:
		return KindTask
	case *shoalv1.Network:
		return KindNetwork
	}
	return ""
}

// Wrap puts an object in the StoreObject oneof (nil for an unknown type).
func Wrap(o Object) *shoalv1.StoreObject {
	switch v := o.(type) {
	case *shoalv1.Cluster:
		return &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Cluster{Cluster: v}}
	case *shoalv1.Node:
		return &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Node{Node: v}}
	case *shoalv1.Service:
		return &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Service{Service: v}}
	case *shoalv1.Task:
		return &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Task{Task: v}}
	case *shoalv1.Network:
		return &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Network{Network: v}}
	}
	return nil
}

// Unwrap returns the object held by a StoreObject, or nil when it is empty.
func Unwrap(so *shoalv1.StoreObject) Object {
	switch v := so.GetObject().(type) {
	case *shoalv1.StoreObject_Cluster:
		if v.Cluster != nil {
			return v.Cluster
		}
	case *shoalv1.StoreObject_Node:
		if v.Node != nil {
			return v.Node
		}
	case *shoalv1.StoreObject_Service:
		if v.Service != nil {
			return v.Service
		}
	case *shoalv1.StoreObject_Task:
		if v.Task != nil {
			return v.Task
		}
	case *shoalv1.StoreObject_Network:
		if v.Network != nil {
			return v.Network
		}
	}
	return nil
}

// kindOfEvent is the kind of the object a watch event carries.
func kindOfEvent(ev *shoalv1.WatchEvent) Kind {
	return KindOf(Unwrap(ev.GetObject()))
}

// newObject returns an empty object of a kind carrying only meta.id; it is
// what a DELETE op sends through the log.
func newObject(kind Kind, id string) Object {
	m := &shoalv1.Meta{Id: id}
	switch kind {
	case KindCluster:
		return &shoalv1.Cluster{Meta: m}
	case KindNode:
		return &shoalv1.Node{Meta: m}
	case KindService:
		return &shoalv1.Service{Meta: m}
	case KindTask:
		return &shoalv1.Task{Meta: m}
	case KindNetwork:
		return &shoalv1.Network{Meta: m}
	}
	return nil
}

// ensureMeta gives an object a Meta if it has none and returns it. The
// Object interface has no setter, hence the type switch.
func ensureMeta(o Object) *shoalv1.Meta {
	if m := o.GetMeta(); m != nil {
		return m
	}
	m := &shoalv1.Meta{}
	switch v := o.(type) {
	case *shoalv1.Cluster:
		v.Meta = m
	case *shoalv1.Node:
		v.Meta = m
	case *shoalv1.Service:
		v.Meta = m
	case *shoalv1.Task:
		v.Meta = m
	case *shoalv1.Network:
		v.Meta = m
	}
	return m
}

// kindFor is the Kind of T, found from T's zero value (a typed nil pointer).
func kindFor[T Object]() Kind {
	var zero T
	return KindOf(zero)
}

// Get returns the object of type T with the given id.
func Get[T Object](r Reader, id string) (T, bool) {
	t, ok := r.Get(kindFor[T](), id).(T)
	return t, ok
}

// List returns every object of type T, sorted by id.
func List[T Object](r Reader) []T {
	return typed[T](r.List(kindFor[T]()))
}

// ClusterOf returns the cluster object (there is one once the cluster is
// bootstrapped).
func ClusterOf(r Reader) (*shoalv1.Cluster, bool) {
	cs := List[*shoalv1.Cluster](r)
	if len(cs) == 0 {
		return nil, false
	}
	return cs[0], true
}

// Find returns the objects of type T whose index equals value, sorted by id.
func Find[T Object](r Reader, index, value string) []T {
	return typed[T](r.Find(kindFor[T](), index, value))
}

func typed[T Object](objs []Object) []T {
	if len(objs) == 0 {
		return nil
	}
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		if t, ok := o.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// prefixReader is implemented by the package's readers to find ids by prefix
// through the id index instead of a scan.
type prefixReader interface {
	withIDPrefix(kind Kind, prefix string) []Object
}

// ResolveRef finds the object of type T an operator means by ref: an exact
// id, else an exact name (kinds with a name index), else a unique id prefix.
// A prefix matching several objects fails with ErrAmbiguous naming them; no
// match fails with ErrNotFound.
func ResolveRef[T Object](r Reader, ref string) (T, error) {
	var zero T
	kind := kindFor[T]()
	def := tableDefs[kind]
	if def == nil {
		return zero, fmt.Errorf("raftstore: cannot resolve a %T", zero)
	}
	if ref == "" {
		return zero, fmt.Errorf("%s %q: %w", kind, ref, ErrNotFound)
	}
	if t, ok := Get[T](r, ref); ok {
		return t, nil
	}
	if _, ok := def.indexes[IndexName]; ok {
		byName := Find[T](r, IndexName, ref)
		switch len(byName) {
		case 0:
		case 1:
			return byName[0], nil
		default:
			// Only node names can repeat (they fall back to hostnames).
			return zero, fmt.Errorf("%s name %q matches %s: %w", kind, ref, idList(byName), ErrAmbiguous)
		}
	}
	var matches []T
	if pr, ok := r.(prefixReader); ok {
		matches = typed[T](pr.withIDPrefix(kind, ref))
	} else {
		for _, t := range List[T](r) {
			if strings.HasPrefix(t.GetMeta().GetId(), ref) {
				matches = append(matches, t)
			}
		}
	}
	switch len(matches) {
	case 0:
		return zero, fmt.Errorf("%s %q: %w", kind, ref, ErrNotFound)
	case 1:
		return matches[0], nil
	}
	return zero, fmt.Errorf("%s id prefix %q matches %s: %w", kind, ref, idList(matches), ErrAmbiguous)
}

// ResolveTask is ResolveRef for tasks, which also takes the name `service
// ps` shows: SERVICE.SLOT, a replicated service's slot, or SERVICE.NODE, a
// global service's task on the node whose id begins with NODE (SERVICE by
// name or id, as ResolveRef finds a service). Of the tasks so named, the
// one meant to run is taken (desired RUNNING; RUNNING before the others,
// then the newest: a start-first update has two), else the newest. Names
// of global tasks on several nodes fail with ErrAmbiguous.
func ResolveTask(r Reader, ref string) (*shoalv1.Task, error) {
	t, err := ResolveRef[*shoalv1.Task](r, ref)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return t, err
	}
	i := strings.LastIndexByte(ref, '.')
	if i <= 0 || i == len(ref)-1 {
		return nil, err
	}
	svc, serr := ResolveRef[*shoalv1.Service](r, ref[:i])
	if serr != nil {
		return nil, err
	}
	suffix := ref[i+1:]
	slot, perr := strconv.ParseUint(suffix, 10, 64)
	var named []*shoalv1.Task
	nodes := map[string]bool{}
	for _, tk := range Find[*shoalv1.Task](r, IndexServiceID, svc.GetMeta().GetId()) {
		if perr == nil && tk.GetSlot() == slot || tk.GetSlot() == 0 && strings.HasPrefix(tk.GetNodeId(), suffix) {
			named = append(named, tk)
			nodes[tk.GetNodeId()] = true
		}
	}
	if len(named) == 0 {
		return nil, fmt.Errorf("%s %q: no task of service %q is so named: %w", KindTask, ref, svc.GetSpec().GetName(), ErrNotFound)
	}
	if perr != nil && len(nodes) > 1 {
		return nil, fmt.Errorf("%s %q: node id prefix %q matches the tasks %s: %w", KindTask, ref, suffix, idList(named), ErrAmbiguous)
	}
	rank := func(tk *shoalv1.Task) int {
		switch {
		case tk.GetDesiredState() == shoalv1.TaskState_TASK_STATE_RUNNING && tk.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_RUNNING:
			return 2
		case tk.GetDesiredState() == shoalv1.TaskState_TASK_STATE_RUNNING:
			return 1
		}
		return 0
	}
	best := named[0]
	for _, tk := range named[1:] {
		if rb, rt := rank(best), rank(tk); rt > rb || rt == rb && tk.GetMeta().GetVersion() > best.GetMeta().GetVersion() {
			best = tk
		}
	}
	return best, nil
}

// idList formats up to five ids for an error message.
func idList[T Object](objs []T) string {
	ids := make([]string, 0, len(objs))
	for _, o := range objs {
		ids = append(ids, fmt.Sprintf("%q", o.GetMeta().GetId()))
	}
	sort.Strings(ids)
	if len(ids) > 5 {
		return strings.Join(ids[:5], ", ") + fmt.Sprintf(" and %d more", len(ids)-5)
	}
	return strings.Join(ids, ", ")
}

// idEncoding is lowercase base32 so ids are easy to type and to prefix-match.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewID returns a new random object id: 25 lowercase base32 characters
// (125 bits from crypto/rand).
func NewID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand panics instead)
	return idEncoding.EncodeToString(b[:])[:25]
}
