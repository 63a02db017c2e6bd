package httpapi

import (
	"encoding/base64"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The struct encoder: for generated message types whose fields are all
// plain (no oneofs, no proto3 optional scalars), appendJSON reads the Go
// struct through an encoder built once per type from the descriptor,
// as encoding/json caches its encoders, instead of protoreflect's
// per-field Values. Other types (and well-known types other than
// Timestamp) take appendJSON's protoreflect path.

// structEncoder encodes one message type; nil fields means "use the
// protoreflect path".
type structEncoder struct {
	fields []fieldEncoder
	plain  bool
}

type fieldEncoder struct {
	index int    // in the Go struct
	name  string // `"jsonName":`
	// empty reports an unpopulated field (left out, as protojson does).
	empty func(v reflect.Value) bool
	enc   func(b []byte, v reflect.Value) ([]byte, error)
}

var structEncoders typeCache[structEncoder]

// typeCache holds what is built once per Go message type (encoders,
// decoders). Building takes mu and may build other types recursively;
// entries are published only once complete, so readers do not lock.
type typeCache[E any] struct {
	mu sync.Mutex // serializes building
	m  sync.Map   // reflect.Type (pointer to struct) -> *E
}

// of returns t's entry, calling build (with the entries being built) on
// first use.
func (c *typeCache[E]) of(t reflect.Type, build func(building map[reflect.Type]*E) *E) *E {
	if e, ok := c.m.Load(t); ok {
		return e.(*E)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	building := map[reflect.Type]*E{}
	e := build(building)
	for t, e := range building {
		c.m.Store(t, e)
	}
	return e
}

// start returns t's entry if it is built or being built (found), or else
// a new empty one, recorded in building before its fields are built so
// that recursive types find it.
func (c *typeCache[E]) start(t reflect.Type, building map[reflect.Type]*E) (e *E, found bool) {
	if e, ok := c.m.Load(t); ok {
		return e.(*E), true
	}
	if e, ok := building[t]; ok {
		return e, true
	}
	e = new(E)
	building[t] = e
	return e, false
}

// structEncoderOf returns t's encoder, building it (and those of the
// message types it holds) on first use.
func structEncoderOf(t reflect.Type, md protoreflect.MessageDescriptor) *structEncoder {
	return structEncoders.of(t, func(building map[reflect.Type]*structEncoder) *structEncoder {
		return buildStructEncoder(t, md, building)
	})
}

// buildStructEncoder builds t's encoder with structEncoders.mu held.
func buildStructEncoder(t reflect.Type, md protoreflect.MessageDescriptor, building map[reflect.Type]*structEncoder) *structEncoder {
	e, found := structEncoders.start(t, building)
	if found {
		return e
	}
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct || wellKnown(md) {
		return e
	}
	st := t.Elem()
	var fields []fieldEncoder
	for i := range st.NumField() {
		sf := st.Field(i)
		if _, ok := sf.Tag.Lookup("protobuf_oneof"); ok {
			return e
		}
		tag, ok := sf.Tag.Lookup("protobuf")
		if !ok {
			continue
		}
		fd := md.Fields().ByName(protoreflect.Name(tagName(tag)))
		if fd == nil || fd.HasPresence() && fd.Kind() != protoreflect.MessageKind {
			return e
		}
		fe, ok := newFieldEncoder(fd, sf.Type, building)
		if !ok {
			return e
		}
		fe.index = i
		fe.name = strconv.Quote(fd.JSONName()) + ":"
		fields = append(fields, fe)
	}
	if len(fields) != md.Fields().Len() {
		return e
	}
	e.fields, e.plain = fields, true
	return e
}

// tagName is the name= part of a protobuf struct tag.
func tagName(tag string) string {
	for part := range strings.SplitSeq(tag, ",") {
		if n, ok := strings.CutPrefix(part, "name="); ok {
			return n
		}
	}
	return ""
}

func newFieldEncoder(fd protoreflect.FieldDescriptor, t reflect.Type, building map[reflect.Type]*structEncoder) (fieldEncoder, bool) {
	switch {
	case fd.IsMap():
		if t.Kind() != reflect.Map {
			return fieldEncoder{}, false
		}
		kenc, ok := valueEncoder(fd.MapKey(), t.Key(), building)
		if !ok || fd.MapKey().Kind() != protoreflect.StringKind {
			// Other key types: the protoreflect path.
			return fieldEncoder{}, false
		}
		venc, ok := valueEncoder(fd.MapValue(), t.Elem(), building)
		if !ok {
			return fieldEncoder{}, false
		}
		return fieldEncoder{empty: func(v reflect.Value) bool { return v.Len() == 0 },
			enc: func(b []byte, v reflect.Value) ([]byte, error) {
				return appendStringMap(b, v, kenc, venc)
			}}, true
	case fd.IsList():
		if t.Kind() != reflect.Slice {
			return fieldEncoder{}, false
		}
		if fd.Kind() == protoreflect.BytesKind && t.Elem().Kind() != reflect.Slice {
			return fieldEncoder{}, false
		}
		venc, ok := valueEncoder(fd, t.Elem(), building)
		if !ok {
			return fieldEncoder{}, false
		}
		return fieldEncoder{empty: func(v reflect.Value) bool { return v.Len() == 0 },
			enc: func(b []byte, v reflect.Value) ([]byte, error) {
				b = append(b, '[')
				var err error
				for i := range v.Len() {
					if i > 0 {
						b = append(b, ',')
					}
					if b, err = venc(b, v.Index(i)); err != nil {
						return b, err
					}
				}
				return append(b, ']'), nil
			}}, true
	}
	enc, ok := valueEncoder(fd, t, building)
	if !ok {
		return fieldEncoder{}, false
	}
	var empty func(v reflect.Value) bool
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		empty = reflect.Value.IsNil
	case protoreflect.BytesKind, protoreflect.StringKind:
		empty = func(v reflect.Value) bool { return v.Len() == 0 }
	case protoreflect.BoolKind:
		empty = func(v reflect.Value) bool { return !v.Bool() }
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		// -0 is populated in proto3 (its bits are not zero).
		empty = func(v reflect.Value) bool { return math.Float64bits(v.Float()) == 0 }
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		empty = func(v reflect.Value) bool { return v.Uint() == 0 }
	default:
		empty = func(v reflect.Value) bool { return v.Int() == 0 }
	}
	return fieldEncoder{empty: empty, enc: enc}, true
}

// valueEncoder encodes one value of fd's kind held in a Go value of t.
func valueEncoder(fd protoreflect.FieldDescriptor, t reflect.Type, building map[reflect.Type]*structEncoder) (func([]byte, reflect.Value) ([]byte, error), bool) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return func(b []byte, v reflect.Value) ([]byte, error) { return strconv.AppendBool(b, v.Bool()), nil }, t.Kind() == reflect.Bool
	case protoreflect.StringKind:
		return func(b []byte, v reflect.Value) ([]byte, error) { return appendString(b, v.String()) }, t.Kind() == reflect.String
	case protoreflect.BytesKind:
		return func(b []byte, v reflect.Value) ([]byte, error) {
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, v.Bytes())
			return append(b, '"'), nil
		}, t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return func(b []byte, v reflect.Value) ([]byte, error) { return strconv.AppendInt(b, v.Int(), 10), nil }, t.Kind() == reflect.Int32
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return func(b []byte, v reflect.Value) ([]byte, error) { return strconv.AppendUint(b, v.Uint(), 10), nil }, t.Kind() == reflect.Uint32
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return func(b []byte, v reflect.Value) ([]byte, error) {
			b = append(b, '"')
			return append(strconv.AppendInt(b, v.Int(), 10), '"'), nil
		}, t.Kind() == reflect.Int64
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return func(b []byte, v reflect.Value) ([]byte, error) {
			b = append(b, '"')
			return append(strconv.AppendUint(b, v.Uint(), 10), '"'), nil
		}, t.Kind() == reflect.Uint64
	case protoreflect.FloatKind:
		return func(b []byte, v reflect.Value) ([]byte, error) { return appendFloat(b, v.Float(), 32), nil }, t.Kind() == reflect.Float32
	case protoreflect.DoubleKind:
		return func(b []byte, v reflect.Value) ([]byte, error) { return appendFloat(b, v.Float(), 64), nil }, t.Kind() == reflect.Float64
	case protoreflect.EnumKind:
		if fd.Enum().FullName() == "google.protobuf.NullValue" || t.Kind() != reflect.Int32 {
			return nil, false
		}
		names := map[int64]string{}
		vals := fd.Enum().Values()
		for i := range vals.Len() {
			names[int64(vals.Get(i).Number())] = strconv.Quote(string(vals.Get(i).Name()))
		}
		return func(b []byte, v reflect.Value) ([]byte, error) {
			if n, ok := names[v.Int()]; ok {
				return append(b, n...), nil
			}
			return strconv.AppendInt(b, v.Int(), 10), nil
		}, true
	case protoreflect.MessageKind:
		if t.Kind() != reflect.Pointer {
			return nil, false
		}
		md := fd.Message()
		if md.FullName() == "google.protobuf.Timestamp" && t == reflect.TypeFor[*timestamppb.Timestamp]() {
			return func(b []byte, v reflect.Value) ([]byte, error) {
				ts := v.Interface().(*timestamppb.Timestamp)
				return appendTimestamp(b, ts.GetSeconds(), int64(ts.GetNanos()))
			}, true
		}
		se := buildStructEncoder(t, md, building)
		return func(b []byte, v reflect.Value) ([]byte, error) {
			if se.plain && !v.IsNil() {
				return se.append(b, v.Elem())
			}
			m, ok := v.Interface().(proto.Message)
			if !ok {
				return b, errFallback
			}
			return appendJSON(b, m.ProtoReflect())
		}, true
	}
	return nil, false
}

func (e *structEncoder) append(b []byte, v reflect.Value) ([]byte, error) {
	b = append(b, '{')
	first := true
	var err error
	for i := range e.fields {
		f := &e.fields[i]
		fv := v.Field(f.index)
		if f.empty(fv) {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, f.name...)
		if b, err = f.enc(b, fv); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

// appendStringMap writes a map with string keys, sorted as protojson
// sorts them.
func appendStringMap(b []byte, v reflect.Value, kenc, venc func([]byte, reflect.Value) ([]byte, error)) ([]byte, error) {
	keys := v.MapKeys()
	slices.SortFunc(keys, func(x, y reflect.Value) int { return strings.Compare(x.String(), y.String()) })
	b = append(b, '{')
	var err error
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = kenc(b, k); err != nil {
			return b, err
		}
		b = append(b, ':')
		if b, err = venc(b, v.MapIndex(k)); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}
