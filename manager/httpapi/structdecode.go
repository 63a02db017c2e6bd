package httpapi

import (
	"reflect"
	"unsafe"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The struct decoder: unmarshalJSON's fast path for plain generated
// types (as the struct encoder's: no oneofs, no proto3 optional
// scalars) writes the Go struct's fields in place, through a decoder
// built once per type from the descriptor, instead of protoreflect's
// boxed Values and setters (which took most of the decoding of a reply;
// a list of 1,000 services decodes about twice as fast). Other message
// types take the protoreflect path (jsonDecoder.object); the input
// accepted, and the value decoded, are the same.

// structDecoder decodes one message type; !plain means "use the
// protoreflect path".
type structDecoder struct {
	byName map[string]*fieldDecoder // JSON names, then proto names
	plain  bool
}

type fieldDecoder struct {
	num    int     // the field's number (duplicates are refused)
	offset uintptr // in the Go struct
	// dec reads the field's value (not null) into the field at p.
	dec func(d *jsonDecoder, p unsafe.Pointer, depth int) bool
}

var (
	structDecoders    typeCache[structDecoder]
	timestampPtrType  = reflect.TypeFor[*timestamppb.Timestamp]()
	protoMessageIface = reflect.TypeFor[proto.Message]()
)

// structDecoderOf returns t's decoder, building it (and those of the
// message types it holds) on first use.
func structDecoderOf(t reflect.Type, md protoreflect.MessageDescriptor) *structDecoder {
	return structDecoders.of(t, func(building map[reflect.Type]*structDecoder) *structDecoder {
		return buildStructDecoder(t, md, building)
	})
}

func buildStructDecoder(t reflect.Type, md protoreflect.MessageDescriptor, building map[reflect.Type]*structDecoder) *structDecoder {
	e, found := structDecoders.start(t, building)
	if found {
		return e
	}
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct || wellKnown(md) ||
		md.ParentFile() == nil || md.ParentFile().Syntax() != protoreflect.Proto3 {
		return e
	}
	st := t.Elem()
	byName := map[string]*fieldDecoder{}
	var texts []protoreflect.FieldDescriptor
	var fds []*fieldDecoder
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
		if fd == nil || fd.HasPresence() && fd.Kind() != protoreflect.MessageKind || fd.Number() >= 128 {
			return e
		}
		dec, ok := newFieldDecoder(fd, sf.Type, building)
		if !ok {
			return e
		}
		f := &fieldDecoder{num: int(fd.Number()), offset: sf.Offset, dec: dec}
		byName[fd.JSONName()] = f
		texts = append(texts, fd)
		fds = append(fds, f)
	}
	if len(fds) != md.Fields().Len() {
		return e
	}
	// protojson looks a name up as a JSON name first.
	for i, fd := range texts {
		if _, ok := byName[string(fd.Name())]; !ok {
			byName[string(fd.Name())] = fds[i]
		}
	}
	e.byName, e.plain = byName, true
	return e
}

// newFieldDecoder returns the decoder of a field of Go type t.
func newFieldDecoder(fd protoreflect.FieldDescriptor, t reflect.Type, building map[reflect.Type]*structDecoder) (func(*jsonDecoder, unsafe.Pointer, int) bool, bool) {
	switch {
	case fd.IsList():
		elem, ok := valueDecoder(fd, t.Elem(), building)
		if !ok {
			return nil, false
		}
		return func(d *jsonDecoder, p unsafe.Pointer, depth int) bool {
			if d.peek() != '[' {
				return false
			}
			d.i++
			l := reflect.NewAt(t, p).Elem()
			if d.peek() == ']' {
				d.i++
				return true
			}
			for {
				v := reflect.New(t.Elem())
				if !elem(d, v.UnsafePointer(), depth) {
					return false
				}
				l.Set(reflect.Append(l, v.Elem()))
				if done, ok := d.sep(']'); done || !ok {
					return ok
				}
			}
		}, true
	case fd.IsMap():
		return mapDecoder(fd, t, building)
	}
	return valueDecoder(fd, t, building)
}

// mapDecoder reads a map field of Go type t.
func mapDecoder(fd protoreflect.FieldDescriptor, t reflect.Type, building map[reflect.Type]*structDecoder) (func(*jsonDecoder, unsafe.Pointer, int) bool, bool) {
	vdec, ok := valueDecoder(fd.MapValue(), t.Elem(), building)
	if !ok || t.Key().Kind() != reflect.String && fd.MapKey().Kind() == protoreflect.StringKind {
		return nil, false
	}
	kd := fd.MapKey()
	return func(d *jsonDecoder, p unsafe.Pointer, depth int) bool {
		if d.peek() != '{' {
			return false
		}
		d.i++
		m := reflect.NewAt(t, p).Elem()
		if m.IsNil() {
			m.Set(reflect.MakeMap(t))
		}
		if d.peek() == '}' {
			d.i++
			return true
		}
		for {
			name, ok := d.str()
			if !ok || d.peek() != ':' {
				return false
			}
			d.i++
			k, ok := mapKey(kd, name)
			if !ok {
				return false
			}
			kv := reflect.ValueOf(k.Interface()).Convert(t.Key())
			if m.MapIndex(kv).IsValid() {
				return false // a duplicate key is protojson's error
			}
			v := reflect.New(t.Elem())
			if !vdec(d, v.UnsafePointer(), depth) {
				return false
			}
			m.SetMapIndex(kv, v.Elem())
			if done, ok := d.sep('}'); done || !ok {
				return ok
			}
		}
	}, true
}

// valueDecoder reads one value of fd's type (a singular field, a list's
// element, a map's value) into a Go value of type t at p.
func valueDecoder(fd protoreflect.FieldDescriptor, t reflect.Type, building map[reflect.Type]*structDecoder) (func(*jsonDecoder, unsafe.Pointer, int) bool, bool) {
	switch fd.Kind() {
	case protoreflect.MessageKind:
		if t == timestampPtrType {
			return func(d *jsonDecoder, p unsafe.Pointer, _ int) bool {
				secs, nanos, ok := d.timestampValue()
				*(**timestamppb.Timestamp)(p) = &timestamppb.Timestamp{Seconds: secs, Nanos: nanos}
				return ok
			}, true
		}
		if t.Kind() != reflect.Pointer || !t.Implements(protoMessageIface) {
			return nil, false
		}
		se := buildStructDecoder(t, fd.Message(), building)
		return func(d *jsonDecoder, p unsafe.Pointer, depth int) bool {
			v := reflect.New(t.Elem())
			*(*unsafe.Pointer)(p) = v.UnsafePointer()
			if depth >= maxDecodeDepth {
				return false
			}
			if se.plain {
				return d.structObject(se, v.UnsafePointer(), depth+1)
			}
			return d.message(v.Interface().(proto.Message).ProtoReflect(), depth+1)
		}, true
	case protoreflect.StringKind:
		if t.Kind() != reflect.String {
			return nil, false
		}
		return func(d *jsonDecoder, p unsafe.Pointer, _ int) bool {
			s, ok := d.str()
			*(*string)(p) = string(s)
			return ok
		}, true
	case protoreflect.BytesKind, protoreflect.GroupKind:
		return nil, false
	}
	// The other scalars, read as jsonDecoder.scalar reads them, written
	// without boxing.
	k := fd.Kind()
	want := map[protoreflect.Kind]reflect.Kind{
		protoreflect.BoolKind: reflect.Bool, protoreflect.EnumKind: reflect.Int32,
		protoreflect.Int32Kind: reflect.Int32, protoreflect.Sint32Kind: reflect.Int32, protoreflect.Sfixed32Kind: reflect.Int32,
		protoreflect.Int64Kind: reflect.Int64, protoreflect.Sint64Kind: reflect.Int64, protoreflect.Sfixed64Kind: reflect.Int64,
		protoreflect.Uint32Kind: reflect.Uint32, protoreflect.Fixed32Kind: reflect.Uint32,
		protoreflect.Uint64Kind: reflect.Uint64, protoreflect.Fixed64Kind: reflect.Uint64,
		protoreflect.FloatKind: reflect.Float32, protoreflect.DoubleKind: reflect.Float64,
	}[k]
	if want == reflect.Invalid || t.Kind() != want {
		return nil, false
	}
	switch want {
	case reflect.Int32:
		if k == protoreflect.EnumKind {
			break
		}
		return func(d *jsonDecoder, p unsafe.Pointer, _ int) bool {
			s, ok := d.intToken()
			if !ok {
				return false
			}
			v, ok := intValue(k, s)
			if !ok {
				return false
			}
			*(*int32)(p) = int32(v.Int())
			return true
		}, true
	case reflect.Int64:
		return func(d *jsonDecoder, p unsafe.Pointer, _ int) bool {
			s, ok := d.intToken()
			if !ok {
				return false
			}
			v, ok := intValue(k, s)
			if !ok {
				return false
			}
			*(*int64)(p) = v.Int()
			return true
		}, true
	case reflect.Uint32, reflect.Uint64:
		return func(d *jsonDecoder, p unsafe.Pointer, _ int) bool {
			s, ok := d.intToken()
			if !ok {
				return false
			}
			v, ok := intValue(k, s)
			if !ok {
				return false
			}
			if want == reflect.Uint32 {
				*(*uint32)(p) = uint32(v.Uint())
			} else {
				*(*uint64)(p) = v.Uint()
			}
			return true
		}, true
	}
	return func(d *jsonDecoder, p unsafe.Pointer, _ int) bool {
		v, ok := d.scalar(fd)
		if !ok {
			return false
		}
		switch want {
		case reflect.Bool:
			*(*bool)(p) = v.Bool()
		case reflect.Int32: // an enum
			*(*int32)(p) = int32(v.Enum())
		case reflect.Float32:
			*(*float32)(p) = float32(v.Float())
		case reflect.Float64:
			*(*float64)(p) = v.Float()
		}
		return true
	}, true
}

// structObject reads an object into the struct at p.
func (d *jsonDecoder) structObject(se *structDecoder, p unsafe.Pointer, depth int) bool {
	if depth > maxDecodeDepth || d.peek() != '{' {
		return false
	}
	d.i++
	if d.peek() == '}' {
		d.i++
		return true
	}
	var seen [2]uint64
	for {
		name, ok := d.str()
		if !ok || d.peek() != ':' {
			return false
		}
		d.i++
		f := se.byName[unsafe.String(unsafe.SliceData(name), len(name))]
		if f == nil || !mark(&seen, f.num) {
			return false
		}
		if d.peek() == 'n' {
			if !d.literal("null") {
				return false
			}
		} else if !f.dec(d, unsafe.Add(p, f.offset), depth) {
			return false
		}
		if done, ok := d.sep('}'); done || !ok {
			return ok
		}
	}
}
