package httpapi

import (
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// apiMessages is every message type of the API (map entries left out).
func apiMessages(t testing.TB) []protoreflect.MessageType {
	_ = shoalv1.File_shoalv1_control_proto // the package's files are registered
	var mts []protoreflect.MessageType
	var collect func(ms protoreflect.MessageDescriptors)
	collect = func(ms protoreflect.MessageDescriptors) {
		for i := range ms.Len() {
			if !ms.Get(i).IsMapEntry() {
				mt, err := protoregistry.GlobalTypes.FindMessageByName(ms.Get(i).FullName())
				if err != nil {
					t.Fatal(err)
				}
				mts = append(mts, mt)
			}
			collect(ms.Get(i).Messages())
		}
	}
	protoregistry.GlobalFiles.RangeFilesByPackage("shoal.v1", func(f protoreflect.FileDescriptor) bool {
		collect(f.Messages())
		return true
	})
	if len(mts) < 50 {
		t.Fatalf("only %d messages found", len(mts))
	}
	return mts
}

// TestUnmarshalJSONMatchesProtojson: for every message of the API
// (filled at random, a hundred times each) written by protojson (JSON
// names, proto names, indented) and by appendJSON, unmarshalJSON decodes
// the same message as protojson.Unmarshal, and its fast path takes most
// of them (all of those without bytes, timestamps or unnamed enum
// values, which it leaves to protojson).
func TestUnmarshalJSONMatchesProtojson(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	fast, total := 0, 0
	for _, mt := range apiMessages(t) {
		for range 100 {
			m := mt.New()
			fill(rng, m, 3)
			var inputs [][]byte
			for _, o := range []protojson.MarshalOptions{{}, {UseProtoNames: true}, {Multiline: true}, {UseEnumNumbers: true}} {
				b, err := o.Marshal(m.Interface())
				if err != nil {
					t.Fatal(err)
				}
				inputs = append(inputs, b)
			}
			b, err := appendJSON(nil, m)
			if err != nil {
				t.Fatal(err)
			}
			inputs = append(inputs, b)
			for _, in := range inputs {
				want := mt.New().Interface()
				if err := protojson.Unmarshal(in, want); err != nil {
					t.Fatalf("%s: protojson: %v", mt.Descriptor().FullName(), err)
				}
				got := mt.New().Interface()
				if err := unmarshalJSON(in, got); err != nil || !proto.Equal(got, want) {
					t.Fatalf("%s: %s\n got %v (%v)\nwant %v", mt.Descriptor().FullName(), in, got, err, want)
				}
				total++
				if fastUnmarshal(in, mt.New().Interface()) {
					fast++
				}
				// The protoreflect path (a dynamicpb message has no struct).
				dm := dynamicpb.NewMessage(mt.Descriptor())
				if err := unmarshalJSON(in, dm); err != nil || !proto.Equal(dm, want) {
					t.Fatalf("%s (dynamicpb): %s\n got %v (%v)\nwant %v", mt.Descriptor().FullName(), in, dm, err, want)
				}
			}
		}
	}
	if fast < total/3 {
		t.Fatalf("the fast path took only %d of %d bodies", fast, total)
	}
	// Most types take the struct decoder (the service replies must).
	for _, m := range []proto.Message{&shoalv1.ListServicesResponse{}, &shoalv1.UpdateServiceRequest{}, &shoalv1.UpdateServiceResponse{}} {
		if !structDecoderOf(reflect.TypeOf(m), m.ProtoReflect().Descriptor()).plain {
			t.Fatalf("%T does not take the struct decoder", m)
		}
	}
	t.Logf("fast path: %d of %d", fast, total)
}

// TestUnmarshalJSONFastPath: the bodies the API is sent (an
// UpdateService, a CreateService with escapes, numbers quoted or not,
// null fields, maps, lists) take the fast path, with protojson's value.
func TestUnmarshalJSONFastPath(t *testing.T) {
	for _, in := range []string{
		`{"serviceId":"abc","version":"5","spec":{"name":"s0000","labels":{"n":"0"},"task":{"container":{"image":"demo@sha256:aa","stopGraceMs":"10000"},"restart":{"delayMs":"5000"}},"update":{"parallelism":"1","failureAction":"pause","order":"stop-first","monitorMs":"5000"}}}`,
		`{"spec":{"name":"web\u00e9\n\"q\"\\/","replicas":3,"task":{"container":{"image":"demo","env":["A=1","B=\"2\""],"args":[]}}}}`,
		` { "service_id" : "x" , "version" : 7 , "spec" : null } `,
		`{}`,
		`{"spec":{"name":"é ü 漢字 🚀","labels":{}}}`,
		`{"version":"18446744073709551615"}`,
	} {
		m := &shoalv1.UpdateServiceRequest{}
		if strings.Contains(in, "replicas") {
			cm := &shoalv1.CreateServiceRequest{}
			if !fastUnmarshal([]byte(in), cm) {
				t.Fatalf("%s: not taken by the fast path", in)
			}
			want := &shoalv1.CreateServiceRequest{}
			if err := protojson.Unmarshal([]byte(in), want); err != nil || !proto.Equal(cm, want) {
				t.Fatalf("%s: got %v, want %v (%v)", in, cm, want, err)
			}
			continue
		}
		if !fastUnmarshal([]byte(in), m) {
			t.Fatalf("%s: not taken by the fast path", in)
		}
		want := &shoalv1.UpdateServiceRequest{}
		if err := protojson.Unmarshal([]byte(in), want); err != nil || !proto.Equal(m, want) {
			t.Fatalf("%s: got %v, want %v (%v)", in, m, want, err)
		}
	}
}

// badBodies are inputs protojson refuses or reads in ways the fast path
// leaves to it.
var badBodies = []string{
	``, ` `, `null`, `[]`, `"x"`, `{`, `{"spec":`, `{"spec":{}`, `{} {}`, `{}x`, `{,}`, `{"version":1,}`,
	`{"versionx":1}`, `{"version":1,"version":2}`, `{"version":1,"version":null}`, `{"serviceId":"a","service_id":"b"}`,
	`{"version":-1}`, `{"version":"-0"}`, `{"version":01}`, `{"version":1.0}`, `{"version":1e2}`, `{"version":" 1"}`,
	`{"version":18446744073709551616}`, `{"version":true}`, `{"version":"1"x}`, `{"version":nul}`, `{"version":nullx}`,
	`{"serviceId":"a\x01"}`, `{"serviceId":"a\xffb"}`, `{"serviceId":"\ud800"}`, `{"serviceId":"\ud83d\ude80"}`, `{"serviceId":"\x"}`,
	`{"serviceId":"\u12"}`, `{"serviceId":1}`, `{"spec":{"replicas":4294967296}}`, `{"spec":{"replicas":"3"}}`,
	`{"spec":{"labels":{"a":"1","a":"2"}}}`, `{"spec":{"labels":{"a":null}}}`, `{"spec":{"labels":[]}}`,
	`{"spec":{"task":{"container":{"env":[null]}}}}`, `{"spec":{"task":{"container":{"env":"A=1"}}}}`,
	`{"spec":{"update":{"failureAction":"explode"}}}`, `{"spec":{"update":{"failureAction":1}}}`, `{"spec":{"mode":"MODE_GLOBAL"}}`,
	`{"[shoal.v1.x]":1}`, `{"spec":{"task":{"resources":{"limits":{"nanoCpus":"1e9"}}}}}`, "{\"version\":1}\x00",
	`{"spec"  :  {"name":"a"}  ,  "version" : "2" }`, "\t{\"version\":\n3}\r\n",
}

// TestUnmarshalJSONAsProtojson: on malformed or unusual bodies,
// unmarshalJSON fails exactly when protojson does, with protojson's
// error (the field named), and otherwise decodes protojson's value.
func TestUnmarshalJSONAsProtojson(t *testing.T) {
	for _, in := range badBodies {
		checkAsProtojson(t, []byte(in))
	}
	// An unknown field's error names it, as the gateway's 400 must.
	err := unmarshalJSON([]byte(`{"spec":{"name":"web","replicaz":3}}`), &shoalv1.CreateServiceRequest{})
	if err == nil || !strings.Contains(err.Error(), "replicaz") {
		t.Fatalf("unknown field: %v", err)
	}
}

func checkAsProtojson(t *testing.T, in []byte) {
	t.Helper()
	for _, mt := range []protoreflect.MessageType{
		(&shoalv1.UpdateServiceRequest{}).ProtoReflect().Type(),
		(&shoalv1.CreateServiceRequest{}).ProtoReflect().Type(),
	} {
		want := mt.New().Interface()
		werr := protojson.Unmarshal(in, want)
		got := mt.New().Interface()
		gerr := unmarshalJSON(in, got)
		if (gerr == nil) != (werr == nil) || gerr != nil && gerr.Error() != werr.Error() {
			t.Fatalf("%q: error %v, protojson's %v", in, gerr, werr)
		}
		if werr == nil && !proto.Equal(got, want) {
			t.Fatalf("%q: got %v, protojson %v", in, got, want)
		}
		// The fast path never accepts what protojson refuses, nor reads
		// it otherwise.
		fm := mt.New().Interface()
		if fastUnmarshal(in, fm) && (werr != nil || !proto.Equal(fm, want)) {
			t.Fatalf("%q: fast path accepted %v; protojson: %v, %v", in, fm, want, werr)
		}
	}
}

// FuzzUnmarshalJSON: whatever the body, unmarshalJSON answers as
// protojson (go test -fuzz FuzzUnmarshalJSON ./manager/httpapi/).
func FuzzUnmarshalJSON(f *testing.F) {
	for _, in := range badBodies {
		f.Add([]byte(in))
	}
	f.Add([]byte(`{"serviceId":"abc","version":"5","spec":{"name":"s","labels":{"n":"0"},"task":{"container":{"image":"demo","env":["A=1"]}}}}`))
	f.Fuzz(func(t *testing.T, in []byte) { checkAsProtojson(t, in) })
}

// TestUnmarshalJSONDynamic: a dynamicpb message (protoreflect only, no
// generated struct) decodes as protojson decodes it.
func TestUnmarshalJSONDynamic(t *testing.T) {
	in := []byte(`{"serviceId":"a","version":"3","spec":{"name":"web","labels":{"x":"y"},"task":{"container":{"env":["A=1"]}}}}`)
	md := (&shoalv1.UpdateServiceRequest{}).ProtoReflect().Descriptor()
	got, want := dynamicpb.NewMessage(md), dynamicpb.NewMessage(md)
	if err := protojson.Unmarshal(in, want); err != nil {
		t.Fatal(err)
	}
	if !fastUnmarshal(in, got) || !proto.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// TestBodyDecoder: an empty body is a request with no fields (io.EOF, as
// the gateway's own decoder says), a body is decoded whole, and a body
// over the limit is the reader's error.
func TestBodyDecoder(t *testing.T) {
	jsonb := newJSONPb()
	var m shoalv1.UpdateServiceRequest
	for _, in := range []string{"", " \n"} {
		if err := (bodyDecoder{strings.NewReader(in), jsonb}).Decode(&m); err != io.EOF {
			t.Fatalf("%q: %v, want io.EOF", in, err)
		}
	}
	if err := (bodyDecoder{strings.NewReader(`{"version":"4"}`), jsonb}).Decode(&m); err != nil || m.GetVersion() != 4 {
		t.Fatalf("%v %v", &m, err)
	}
	if err := (bodyDecoder{strings.NewReader(`{"version":"4"} {}`), jsonb}).Decode(&m); err == nil {
		t.Fatal("data after the body accepted")
	}
	boom := io.ErrUnexpectedEOF
	if err := (bodyDecoder{io.MultiReader(strings.NewReader(`{"ver`), errReader{boom}), jsonb}).Decode(&m); err != boom {
		t.Fatalf("read error: %v", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
