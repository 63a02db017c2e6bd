package httpapi

import (
	"bytes"
	"io"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// unmarshalJSON sets m (reset first) from the protojson in b, as
// protojson.Unmarshal does with the gateway's options (unknown fields
// refused). A request body is decoded in one pass over the bytes,
// straight into the message — into the Go struct's fields for plain
// generated types (structdecode.go), else through protoreflect —
// without protojson's token objects and without the gateway's first
// pass (encoding/json scanning the body into a json.RawMessage): on the
// benchmark's UpdateService body that pass and protojson took about a
// tenth of the whole HTTP call's CPU.
//
// The fast path takes the common input only: objects, strings (escapes
// included), integers written plainly (quoted or not), floats, bools,
// enums by name, lists, maps, Timestamps and nested messages of proto3
// types. Anything else — bytes, other well-known types, an enum by
// number, an unknown field, a duplicate, invalid JSON or UTF-8, a number
// out of range — makes it give up, and protojson decodes the body
// afresh: its result, and its error naming the field, are the answer.
// So what is accepted, and its value, is protojson's
// (TestUnmarshalJSONMatchesProtojson, FuzzUnmarshalJSON).
func unmarshalJSON(b []byte, m proto.Message) error {
	if fastUnmarshal(b, m) {
		return nil
	}
	proto.Reset(m)
	return protojson.UnmarshalOptions{}.Unmarshal(b, m)
}

// fastUnmarshal is unmarshalJSON's fast path: false where it gives up
// (m then holds part of b).
func fastUnmarshal(b []byte, m proto.Message) bool {
	proto.Reset(m)
	d := jsonDecoder{b: b}
	r := m.ProtoReflect()
	if rv := reflect.ValueOf(m); rv.Kind() == reflect.Pointer && !rv.IsNil() {
		if se := structDecoderOf(rv.Type(), r.Descriptor()); se.plain {
			return d.structObject(se, rv.UnsafePointer(), 0) && d.end()
		}
	}
	return d.object(r, 0) && d.end()
}

// maxDecodeDepth is the nesting the fast path takes; deeper input is
// protojson's (whose limit is 10,000).
const maxDecodeDepth = 64

// jsonDecoder reads one JSON value after another from b; each method
// reports false where the fast path gives up.
type jsonDecoder struct {
	b   []byte
	i   int
	buf []byte // an escaped string's unescaped bytes, reused
}

func (d *jsonDecoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// peek skips white space and returns the next byte (0 at the end).
func (d *jsonDecoder) peek() byte {
	d.ws()
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

// sep reads what follows a member or an element: a comma (more to come)
// or the closing byte (done); ok is false for anything else.
func (d *jsonDecoder) sep(closing byte) (done, ok bool) {
	switch d.peek() {
	case ',':
		d.i++
		return false, true
	case closing:
		d.i++
		return true, true
	}
	return false, false
}

// end reports whether only white space is left.
func (d *jsonDecoder) end() bool {
	d.ws()
	return d.i == len(d.b)
}

// literal consumes lit (true, false, null) if it is next.
func (d *jsonDecoder) literal(lit string) bool {
	if !bytes.HasPrefix(d.b[d.i:], []byte(lit)) {
		return false
	}
	d.i += len(lit)
	// "nullx" is not null: the next byte must end the token.
	if d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r', ',', '}', ']', ':':
		default:
			return false
		}
	}
	return true
}

// str reads a string. The bytes returned are b's own when the string
// has no escapes, else d.buf's: valid only until the next str.
func (d *jsonDecoder) str() ([]byte, bool) {
	if d.peek() != '"' {
		return nil, false
	}
	d.i++
	start := d.i
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			s := d.b[start:d.i]
			d.i++
			return s, utf8.Valid(s)
		case c == '\\':
			return d.escaped(start)
		case c < ' ':
			return nil, false
		}
		d.i++
	}
	return nil, false
}

// escaped reads the rest of a string that has escapes, from start.
func (d *jsonDecoder) escaped(start int) ([]byte, bool) {
	if !utf8.Valid(d.b[start:d.i]) {
		return nil, false
	}
	out := append(d.buf[:0], d.b[start:d.i]...)
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			d.i++
			d.buf = out
			return out, true
		case c < ' ':
			return nil, false
		case c != '\\':
			// A run of plain bytes, checked as UTF-8 as a whole.
			j := d.i
			for j < len(d.b) && d.b[j] != '"' && d.b[j] != '\\' && d.b[j] >= ' ' {
				j++
			}
			if !utf8.Valid(d.b[d.i:j]) {
				return nil, false
			}
			out = append(out, d.b[d.i:j]...)
			d.i = j
			continue
		}
		if d.i+1 >= len(d.b) {
			return nil, false
		}
		switch e := d.b[d.i+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if d.i+6 > len(d.b) {
				return nil, false
			}
			v, err := strconv.ParseUint(string(d.b[d.i+2:d.i+6]), 16, 16)
			// Surrogates (pairs or not) are protojson's.
			if err != nil || v >= 0xd800 && v <= 0xdfff {
				return nil, false
			}
			out = utf8.AppendRune(out, rune(v))
			d.i += 6
			continue
		default:
			return nil, false
		}
		d.i += 2
	}
	return nil, false
}

// number reads a JSON number token and returns its text.
func (d *jsonDecoder) number() ([]byte, bool) {
	d.ws()
	start := d.i
	b := d.b
	i := d.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return nil, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		j := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == j {
			return nil, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == j {
			return nil, false
		}
	}
	d.i = i
	return b[start:i], true
}

// message reads a message: a Timestamp's string, or an object.
func (d *jsonDecoder) message(m protoreflect.Message, depth int) bool {
	if m.Descriptor().FullName() == "google.protobuf.Timestamp" {
		return d.timestamp(m)
	}
	return d.object(m, depth)
}

// timestamp reads a Timestamp into m (protoreflect).
func (d *jsonDecoder) timestamp(m protoreflect.Message) bool {
	secs, nanos, ok := d.timestampValue()
	if !ok {
		return false
	}
	fields := m.Descriptor().Fields()
	m.Set(fields.ByNumber(1), protoreflect.ValueOfInt64(secs))
	m.Set(fields.ByNumber(2), protoreflect.ValueOfInt32(nanos))
	return true
}

// timestampValue reads a Timestamp as protojson does: RFC 3339, at most
// nine fractional digits, between the years 1 and 9999.
func (d *jsonDecoder) timestampValue() (int64, int32, bool) {
	b, ok := d.str()
	if !ok {
		return 0, 0, false
	}
	s := string(b)
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Unix() < minTimestampSeconds || t.Unix() > maxTimestampSeconds {
		return 0, 0, false
	}
	if i, j := strings.LastIndexByte(s, '.'), strings.LastIndexAny(s, "Z-+"); i >= 0 && j >= i && j-i > len(".999999999") {
		return 0, 0, false
	}
	return t.Unix(), int32(t.Nanosecond()), true
}

// object reads an object into m.
func (d *jsonDecoder) object(m protoreflect.Message, depth int) bool {
	md := m.Descriptor()
	if depth > maxDecodeDepth || wellKnown(md) || md.ParentFile() == nil || md.ParentFile().Syntax() != protoreflect.Proto3 {
		return false
	}
	if d.peek() != '{' {
		return false
	}
	d.i++
	if d.peek() == '}' {
		d.i++
		return true
	}
	fields := md.Fields()
	// Fields and oneofs seen, by number and by index, as protojson
	// refuses a second one.
	var seen, seenOneofs [2]uint64
	for {
		name, ok := d.str()
		if !ok || d.peek() != ':' {
			return false
		}
		d.i++
		fd := fields.ByJSONName(unsafe.String(unsafe.SliceData(name), len(name)))
		if fd == nil {
			fd = fields.ByTextName(unsafe.String(unsafe.SliceData(name), len(name)))
		}
		if fd == nil || fd.IsExtension() || !mark(&seen, int(fd.Number())) {
			return false
		}
		if d.peek() == 'n' {
			// null leaves a field unset (Value and NullValue are
			// well-known, not taken here).
			if !d.literal("null") {
				return false
			}
		} else {
			switch {
			case fd.IsList():
				ok = d.list(m.Mutable(fd).List(), fd, depth)
			case fd.IsMap():
				ok = d.mapValue(m.Mutable(fd).Map(), fd, depth)
			default:
				if od := fd.ContainingOneof(); od != nil && !mark(&seenOneofs, od.Index()) {
					return false
				}
				var v protoreflect.Value
				v, ok = d.singular(m, fd, depth)
				if ok {
					m.Set(fd, v)
				}
			}
			if !ok {
				return false
			}
		}
		if done, ok := d.sep('}'); done || !ok {
			return ok
		}
	}
}

// mark sets bit n in set; false if it was set already or is out of its
// range.
func mark(set *[2]uint64, n int) bool {
	if n < 0 || n >= 128 {
		return false
	}
	w, bit := n/64, uint64(1)<<(n%64)
	if set[w]&bit != 0 {
		return false
	}
	set[w] |= bit
	return true
}

// singular reads one value of fd's type (a list's element or a map's
// value too): a message, or a scalar.
func (d *jsonDecoder) singular(m protoreflect.Message, fd protoreflect.FieldDescriptor, depth int) (protoreflect.Value, bool) {
	if fd.Kind() == protoreflect.MessageKind {
		v := m.NewField(fd)
		return v, d.message(v.Message(), depth+1)
	}
	return d.scalar(fd)
}

func (d *jsonDecoder) list(l protoreflect.List, fd protoreflect.FieldDescriptor, depth int) bool {
	if d.peek() != '[' {
		return false
	}
	d.i++
	if d.peek() == ']' {
		d.i++
		return true
	}
	for {
		if fd.Kind() == protoreflect.MessageKind {
			v := l.NewElement()
			if !d.message(v.Message(), depth+1) {
				return false
			}
			l.Append(v)
		} else {
			v, ok := d.scalar(fd)
			if !ok {
				return false
			}
			l.Append(v)
		}
		if done, ok := d.sep(']'); done || !ok {
			return ok
		}
	}
}

func (d *jsonDecoder) mapValue(mp protoreflect.Map, fd protoreflect.FieldDescriptor, depth int) bool {
	if d.peek() != '{' {
		return false
	}
	d.i++
	if d.peek() == '}' {
		d.i++
		return true
	}
	kd, vd := fd.MapKey(), fd.MapValue()
	for {
		name, ok := d.str()
		if !ok || d.peek() != ':' {
			return false
		}
		d.i++
		k, ok := mapKey(kd, name)
		if !ok || mp.Has(k) {
			return false // a duplicate key is protojson's error
		}
		var v protoreflect.Value
		if vd.Kind() == protoreflect.MessageKind {
			v = mp.NewValue()
			ok = d.message(v.Message(), depth+1)
		} else {
			v, ok = d.scalar(vd)
		}
		if !ok {
			return false
		}
		mp.Set(k, v)
		if done, ok := d.sep('}'); done || !ok {
			return ok
		}
	}
}

// mapKey is a map's key from its JSON name: string keys as they are,
// integers written plainly, true or false.
func mapKey(kd protoreflect.FieldDescriptor, name []byte) (protoreflect.MapKey, bool) {
	switch kd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(string(name)).MapKey(), true
	case protoreflect.BoolKind:
		switch string(name) {
		case "true":
			return protoreflect.ValueOfBool(true).MapKey(), true
		case "false":
			return protoreflect.ValueOfBool(false).MapKey(), true
		}
		return protoreflect.MapKey{}, false
	}
	v, ok := intValue(kd.Kind(), name)
	return v.MapKey(), ok
}

// scalar reads a non-message value of fd's kind.
func (d *jsonDecoder) scalar(fd protoreflect.FieldDescriptor) (protoreflect.Value, bool) {
	switch k := fd.Kind(); k {
	case protoreflect.BoolKind:
		switch d.peek() {
		case 't':
			return protoreflect.ValueOfBool(true), d.literal("true")
		case 'f':
			return protoreflect.ValueOfBool(false), d.literal("false")
		}
	case protoreflect.StringKind:
		if s, ok := d.str(); ok {
			return protoreflect.ValueOfString(string(s)), true
		}
	case protoreflect.EnumKind:
		if ed := fd.Enum(); ed.ParentFile() == nil || ed.ParentFile().Package() == "google.protobuf" {
			return protoreflect.Value{}, false // NullValue
		}
		if s, ok := d.str(); ok {
			if ev := fd.Enum().Values().ByName(protoreflect.Name(unsafe.String(unsafe.SliceData(s), len(s)))); ev != nil {
				return protoreflect.ValueOfEnum(ev.Number()), true
			}
		}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		if d.peek() == '"' {
			return protoreflect.Value{}, false // "NaN", "Infinity", quoted numbers
		}
		if s, ok := d.number(); ok {
			bits := map[bool]int{true: 32, false: 64}[k == protoreflect.FloatKind]
			f, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(s), len(s)), bits)
			if err != nil {
				return protoreflect.Value{}, false
			}
			if bits == 32 {
				return protoreflect.ValueOfFloat32(float32(f)), true
			}
			return protoreflect.ValueOfFloat64(f), true
		}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
		protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if s, ok := d.intToken(); ok {
			return intValue(k, s)
		}
	}
	return protoreflect.Value{}, false
}

// intToken reads an integer's token: a number, or a string.
func (d *jsonDecoder) intToken() ([]byte, bool) {
	if d.peek() == '"' {
		return d.str()
	}
	return d.number()
}

// intValue parses an integer written plainly (no sign on unsigned
// kinds, no leading zero, no "-0", fraction or exponent: those are
// protojson's).
func intValue(k protoreflect.Kind, s []byte) (protoreflect.Value, bool) {
	digits := s
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 1 && digits[0] == '0' || len(digits) == 1 && digits[0] == '0' && len(s) == 2 {
		return protoreflect.Value{}, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return protoreflect.Value{}, false
		}
	}
	str := unsafe.String(unsafe.SliceData(s), len(s))
	switch k {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		n, err := strconv.ParseInt(str, 10, 32)
		return protoreflect.ValueOfInt32(int32(n)), err == nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		n, err := strconv.ParseInt(str, 10, 64)
		return protoreflect.ValueOfInt64(n), err == nil
	}
	if len(digits) != len(s) {
		return protoreflect.Value{}, false
	}
	switch k {
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		n, err := strconv.ParseUint(str, 10, 32)
		return protoreflect.ValueOfUint32(uint32(n)), err == nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		n, err := strconv.ParseUint(str, 10, 64)
		return protoreflect.ValueOfUint64(n), err == nil
	}
	return protoreflect.Value{}, false
}

// bodyDecoder is the gateway's request body decoder: the whole body
// (bounded by Gateway's MaxBytesReader) read into a pooled buffer and
// decoded by unmarshalJSON. An empty body is io.EOF, which the gateway
// takes as a request with no fields, as with its json.Decoder. What is
// not a message (no route here has such a body) goes to runtime.JSONPb.
type bodyDecoder struct {
	r     io.Reader
	jsonb *runtime.JSONPb
}

var bodyBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBody is the largest buffer kept for the next body.
const maxPooledBody = 64 << 10

func (d bodyDecoder) Decode(v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return d.jsonb.NewDecoder(d.r).Decode(v)
	}
	buf := bodyBufs.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxPooledBody {
			buf.Reset()
			bodyBufs.Put(buf)
		}
	}()
	buf.Reset()
	if _, err := buf.ReadFrom(d.r); err != nil {
		return err
	}
	if len(bytes.TrimLeft(buf.Bytes(), " \t\r\n")) == 0 {
		return io.EOF
	}
	return unmarshalJSON(buf.Bytes(), m)
}
