package httpapi

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestAppendJSONMatchesProtojson: for every message of the API (filled
// at random, a hundred times each: awkward strings, extreme numbers,
// unnamed enum values, maps, nested messages, timestamps of every
// precision), appendJSON writes the same JSON value as protojson.
func TestAppendJSONMatchesProtojson(t *testing.T) {
	_ = shoalv1.File_shoalv1_control_proto // the package's files are registered
	var msgs []protoreflect.MessageDescriptor
	var collect func(ms protoreflect.MessageDescriptors)
	collect = func(ms protoreflect.MessageDescriptors) {
		for i := range ms.Len() {
			if !ms.Get(i).IsMapEntry() {
				msgs = append(msgs, ms.Get(i))
			}
			collect(ms.Get(i).Messages())
		}
	}
	protoregistry.GlobalFiles.RangeFilesByPackage("shoal.v1", func(f protoreflect.FileDescriptor) bool {
		collect(f.Messages())
		return true
	})
	if len(msgs) < 50 {
		t.Fatalf("only %d messages found", len(msgs))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	plain := 0
	for _, md := range msgs {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
		if err != nil {
			t.Fatal(err)
		}
		for range 100 {
			m := mt.New()
			fill(rng, m, 3)
			want, err := protojson.Marshal(m.Interface())
			if err != nil {
				t.Fatalf("%s: protojson: %v", md.FullName(), err)
			}

			// The generated type (the struct encoder where it applies)
			// and the same message as a dynamicpb one (protoreflect).
			dm := dynamicpb.NewMessage(md)
			proto.Merge(dm, m.Interface())
			for _, x := range []protoreflect.Message{m, dm} {
				got, err := appendJSON(nil, x)
				if err != nil {
					t.Fatalf("%s (%T): %v (protojson: %s)", md.FullName(), x, err, want)
				}
				if !sameJSON(t, got, want) {
					t.Fatalf("%s (%T):\n got %s\nwant %s", md.FullName(), x, got, want)
				}
			}
			plain += map[bool]int{true: 1}[structEncoderOf(reflect.TypeOf(m.Interface()), md).plain]
		}
	}
	// Most types take the struct encoder (ListServicesResponse must).
	if plain < len(msgs)*100/2 || !structEncoderOf(reflect.TypeFor[*shoalv1.ListServicesResponse](), (&shoalv1.ListServicesResponse{}).ProtoReflect().Descriptor()).plain {
		t.Fatalf("only %d of %d encodings took the struct encoder", plain, len(msgs)*100)
	}
}

// TestMarshalJSONFallsBack: what appendJSON refuses (invalid UTF-8, a
// timestamp out of range) gets protojson's error.
func TestMarshalJSONFallsBack(t *testing.T) {
	jsonpb := (&ndjson{newJSONPb()}).JSONPb
	for name, m := range map[string]*shoalv1.Service{
		"utf8":      {Spec: &shoalv1.ServiceSpec{Name: "a\xffb"}},
		"timestamp": {Meta: &shoalv1.Meta{CreatedAt: &timestamppb.Timestamp{Seconds: maxTimestampSeconds + 1}}},
	} {
		_, want := jsonpb.Marshal(m)
		_, got := marshalJSON(jsonpb.Marshal, m)
		if want == nil || got == nil || got.Error() != want.Error() {
			t.Errorf("%s: error %v, want protojson's %v", name, got, want)
		}
	}
}

func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	for _, p := range []struct {
		in  []byte
		out *any
	}{{a, &x}, {b, &y}} {
		d := json.NewDecoder(bytes.NewReader(p.in))
		d.UseNumber()
		if err := d.Decode(p.out); err != nil {
			t.Fatalf("%s: %v", p.in, err)
		}
	}
	return reflect.DeepEqual(x, y)
}

var awkward = []string{"", "plain", `q"uote`, `back\slash`, "nl\n\r\t\b\f", "\x00\x01\x1f\x7f", "<html>&", "é ü 漢字 🚀", "\u2028\u2029", "/slash"}

// fill sets each field of m with probability 2/3, to values protojson
// accepts.
func fill(rng *rand.Rand, m protoreflect.Message, depth int) {
	if m.Descriptor().FullName() == "google.protobuf.Timestamp" {
		fd := m.Descriptor().Fields()
		m.Set(fd.ByNumber(1), protoreflect.ValueOfInt64(rng.Int64N(maxTimestampSeconds-minTimestampSeconds)+minTimestampSeconds))
		nanos := []int64{0, rng.Int64N(1000) * 1e6, rng.Int64N(1e6) * 1e3, rng.Int64N(1e9)}[rng.IntN(4)]
		m.Set(fd.ByNumber(2), protoreflect.ValueOfInt32(int32(nanos)))
		return
	}
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if rng.IntN(3) == 0 {
			continue
		}
		switch {
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range rng.IntN(4) {
				if fd.Kind() == protoreflect.MessageKind {
					if depth == 0 {
						break
					}
					e := l.NewElement()
					fill(rng, e.Message(), depth-1)
					l.Append(e)
				} else {
					l.Append(scalar(rng, fd))
				}
			}
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for range rng.IntN(4) {
				k := scalar(rng, fd.MapKey()).MapKey()
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					if depth == 0 {
						break
					}
					v := mp.NewValue()
					fill(rng, v.Message(), depth-1)
					mp.Set(k, v)
				} else {
					mp.Set(k, scalar(rng, fd.MapValue()))
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			if depth > 0 {
				fill(rng, m.Mutable(fd).Message(), depth-1)
			}
		default:
			m.Set(fd, scalar(rng, fd))
		}
	}
}

func scalar(rng *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	ints := []int64{0, 1, -1, math.MaxInt32, math.MinInt32, rng.Int64()}
	floats := []float64{0, 1.5, -2.25, 1e-7, 1e21, 3e-300, math.MaxFloat64, math.NaN(), math.Inf(1), math.Inf(-1), rng.Float64() * 1e6}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(rng.IntN(2) == 0)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(strings.Repeat(awkward[rng.IntN(len(awkward))], 1+rng.IntN(2)))
	case protoreflect.BytesKind:
		b := make([]byte, rng.IntN(8))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return protoreflect.ValueOfBytes(b)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(ints[rng.IntN(len(ints))]))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(ints[rng.IntN(len(ints))]))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(ints[rng.IntN(len(ints))])
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(ints[rng.IntN(len(ints))]))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(floats[rng.IntN(len(floats))]))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(floats[rng.IntN(len(floats))])
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		if rng.IntN(5) == 0 {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(1000 + rng.IntN(10))) // no name
		}
		return protoreflect.ValueOfEnum(vals.Get(rng.IntN(vals.Len())).Number())
	}
	panic(fd.Kind().String())
}
