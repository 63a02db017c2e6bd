package httpapi

import (
	"encoding/base64"
	"errors"
	"math"
	"math/bits"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// appendJSON appends m as protojson does with the gateway's options
// (lowerCamelCase names, enums by name, 64-bit integers as strings,
// unpopulated fields left out, Timestamps as RFC 3339). Plain generated
// types go through their struct encoder (structjson.go), the others
// through protoreflect (appendReflect) without protojson's per-message
// sorting and closures: a list of 1,000 services encodes several times
// faster. The output is the same JSON value as protojson's
// (TestAppendJSONMatchesProtojson); keys are in field order and map keys
// sorted, so it is deterministic. Well-known types other than Timestamp,
// and extensions, are written by protojson itself. An error (invalid
// UTF-8, a timestamp out of range) is protojson's to report: the caller
// (marshalJSON) then marshals with protojson.
func appendJSON(b []byte, m protoreflect.Message) ([]byte, error) {
	if wellKnown(m.Descriptor()) {
		return appendWellKnown(b, m)
	}
	if pm := m.Interface(); pm != nil {
		if rv := reflect.ValueOf(pm); rv.Kind() == reflect.Pointer && !rv.IsNil() {
			if se := structEncoderOf(rv.Type(), m.Descriptor()); se.plain {
				return se.append(b, rv.Elem())
			}
		}
	}
	return appendReflect(b, m)
}

// appendReflect is appendJSON through protoreflect, for any message.
func appendReflect(b []byte, m protoreflect.Message) ([]byte, error) {
	b = append(b, '{')
	first := true
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.IsExtension() {
			err = errFallback
			return false
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendName(b, fd.JSONName())
		b, err = appendField(b, fd, v)
		return err == nil
	})
	if err != nil {
		return b, err
	}
	return append(b, '}'), nil
}

// errFallback marks what this encoder leaves to protojson.
var errFallback = errors.New("left to protojson")

func appendField(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) ([]byte, error) {
	var err error
	switch {
	case fd.IsList():
		l := v.List()
		b = append(b, '[')
		for i := range l.Len() {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendSingular(b, fd, l.Get(i)); err != nil {
				return b, err
			}
		}
		return append(b, ']'), nil
	case fd.IsMap():
		return appendMap(b, fd, v.Map())
	default:
		return appendSingular(b, fd, v)
	}
}

func appendMap(b []byte, fd protoreflect.FieldDescriptor, m protoreflect.Map) ([]byte, error) {
	keys := make([]protoreflect.MapKey, 0, m.Len())
	m.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k)
		return true
	})
	slices.SortFunc(keys, compareMapKeys)
	b = append(b, '{')
	var err error
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		// JSON keys are strings, whatever the map's key type.
		if fd.MapKey().Kind() == protoreflect.StringKind {
			if b, err = appendString(b, k.String()); err != nil {
				return b, err
			}
		} else {
			b = append(b, '"')
			b = append(b, k.String()...)
			b = append(b, '"')
		}
		b = append(b, ':')
		if b, err = appendSingular(b, fd.MapValue(), m.Get(k)); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

// compareMapKeys is protojson's key order: false before true, numbers
// by value, strings bytewise.
func compareMapKeys(x, y protoreflect.MapKey) int {
	switch a := x.Interface().(type) {
	case bool:
		bv := y.Bool()
		if a == bv {
			return 0
		}
		if !a {
			return -1
		}
		return 1
	case int32, int64:
		return cmpOrdered(x.Int(), y.Int())
	case uint32, uint64:
		return cmpOrdered(x.Uint(), y.Uint())
	default:
		return cmpOrdered(x.String(), y.String())
	}
}

func cmpOrdered[T int64 | uint64 | string](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func appendSingular(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) ([]byte, error) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return strconv.AppendBool(b, v.Bool()), nil
	case protoreflect.StringKind:
		return appendString(b, v.String())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return strconv.AppendInt(b, v.Int(), 10), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return strconv.AppendUint(b, v.Uint(), 10), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		b = append(b, '"')
		return append(strconv.AppendInt(b, v.Int(), 10), '"'), nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		b = append(b, '"')
		return append(strconv.AppendUint(b, v.Uint(), 10), '"'), nil
	case protoreflect.FloatKind:
		return appendFloat(b, v.Float(), 32), nil
	case protoreflect.DoubleKind:
		return appendFloat(b, v.Float(), 64), nil
	case protoreflect.BytesKind:
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, v.Bytes())
		return append(b, '"'), nil
	case protoreflect.EnumKind:
		if fd.Enum().FullName() == "google.protobuf.NullValue" {
			return append(b, "null"...), nil
		}
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return appendString(b, string(ev.Name()))
		}
		return strconv.AppendInt(b, int64(v.Enum()), 10), nil
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return appendJSON(b, v.Message())
	}
	return b, errFallback
}

// appendFloat is protojson's number format: as encoding/json's, with
// NaN and the infinities as strings.
func appendFloat(b []byte, n float64, bitSize int) []byte {
	switch {
	case math.IsNaN(n):
		return append(b, `"NaN"`...)
	case math.IsInf(n, +1):
		return append(b, `"Infinity"`...)
	case math.IsInf(n, -1):
		return append(b, `"-Infinity"`...)
	}
	f := byte('f')
	if abs := math.Abs(n); abs != 0 {
		if bitSize == 64 && (abs < 1e-6 || abs >= 1e21) ||
			bitSize == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			f = 'e'
		}
	}
	b = strconv.AppendFloat(b, n, f, -1, bitSize)
	if f == 'e' {
		// clean up e-09 to e-9
		if k := len(b); k >= 4 && b[k-4] == 'e' && b[k-3] == '-' && b[k-2] == '0' {
			b[k-2] = b[k-1]
			b = b[:k-1]
		}
	}
	return b
}

// appendName appends a field's JSON name and the colon.
func appendName(b []byte, name string) []byte {
	b, _ = appendString(b, name) // names are identifiers: valid UTF-8
	return append(b, ':')
}

var errInvalidUTF8 = errors.New("invalid UTF-8")

// appendString is protojson's string escaping: quotes, backslashes and
// control characters only; invalid UTF-8 is an error.
func appendString(b []byte, s string) ([]byte, error) {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				return b, errInvalidUTF8
			}
			i += n
			continue
		}
		if c >= ' ' && c != '"' && c != '\\' {
			i++
			continue
		}
		b = append(b, s[start:i]...)
		b = append(b, '\\')
		switch c {
		case '"', '\\':
			b = append(b, c)
		case '\b':
			b = append(b, 'b')
		case '\f':
			b = append(b, 'f')
		case '\n':
			b = append(b, 'n')
		case '\r':
			b = append(b, 'r')
		case '\t':
			b = append(b, 't')
		default:
			b = append(b, 'u')
			b = append(b, "0000"[1+(bits.Len32(uint32(c))-1)/4:]...)
			b = strconv.AppendUint(b, uint64(c), 16)
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"'), nil
}

func wellKnown(md protoreflect.MessageDescriptor) bool {
	return md.ParentFile() != nil && md.ParentFile().Package() == "google.protobuf"
}

// Timestamp's bounds (0001-01-01 to 9999-12-31), as protojson's.
const (
	minTimestampSeconds = -62135596800
	maxTimestampSeconds = 253402300799
)

// appendWellKnown writes a Timestamp as protojson does (UTC, 0, 3, 6 or
// 9 fractional digits) and leaves other well-known types to protojson.
func appendWellKnown(b []byte, m protoreflect.Message) ([]byte, error) {
	if m.Descriptor().FullName() != "google.protobuf.Timestamp" {
		out, err := protojson.Marshal(m.Interface())
		if err != nil {
			return b, err
		}
		return append(b, out...), nil
	}
	fields := m.Descriptor().Fields()
	return appendTimestamp(b, m.Get(fields.ByNumber(1)).Int(), m.Get(fields.ByNumber(2)).Int())
}

// appendTimestamp writes a Timestamp as protojson does.
func appendTimestamp(b []byte, secs, nanos int64) ([]byte, error) {
	if secs < minTimestampSeconds || secs > maxTimestampSeconds || nanos < 0 || nanos >= 1e9 {
		return b, errFallback
	}
	start := len(b)
	b = append(b, '"')
	b = time.Unix(secs, nanos).UTC().AppendFormat(b, "2006-01-02T15:04:05.000000000")
	// 0, 3, 6 or 9 fractional digits, as protojson writes them.
	for range 3 {
		if k := len(b); k-start > 4 && string(b[k-3:]) == "000" {
			b = b[:k-3]
		}
	}
	if k := len(b); b[k-1] == '.' {
		b = b[:k-1]
	}
	return append(b, `Z"`...), nil
}

// marshalJSON is the gateway's encoding of a message: appendJSON, or
// protojson for what appendJSON leaves to it (and for its errors).
func marshalJSON(fallback func(any) ([]byte, error), m proto.Message) ([]byte, error) {
	r := m.ProtoReflect()
	hint, _ := sizeHints.LoadOrStore(r.Descriptor().FullName(), new(atomic.Int64))
	size := hint.(*atomic.Int64)
	b, err := appendJSON(make([]byte, 0, min(max(512, size.Load()*9/8), maxSizeHint)), r)
	if err != nil {
		return fallback(m)
	}
	size.Store(int64(len(b)))
	return b, nil
}

// sizeHints holds the last reply's length of each message type, so that
// the next one's buffer rarely grows (a list of 1,000 services is ~0.5
// MB).
var sizeHints sync.Map // protoreflect.FullName -> *atomic.Int64

// maxSizeHint bounds what a hint allocates up front: after a list of
// 100,000 tasks, a short list does not take 25 MB.
const maxSizeHint = 1 << 20
