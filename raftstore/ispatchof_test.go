package raftstore

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// fullSpec sets every field of ServiceSpec.
func fullSpec() *shoalv1.ServiceSpec {
	s := goldenSpec("x")
	s.Labels["keep"], s.Labels["gone"] = "k", "g"
	s.Mode, s.Replicas, s.AutoRebalance = shoalv1.ServiceMode_SERVICE_MODE_GLOBAL, 3, true
	s.Rollback = &shoalv1.UpdateConfig{Parallelism: 2}
	s.Endpoint = &shoalv1.EndpointSpec{Mode: "vip"}
	s.Job = &shoalv1.JobConfig{Completions: 1}
	s.ProtoReflect().SetUnknown(unknownField(5))
	return s
}

// isPatchOf holds for PatchSpec's own result and fails when any one field
// of it differs (a message field by pointer, as PatchSpec shares them).
func TestIsPatchOfChecksEveryField(t *testing.T) {
	base := fullSpec()
	n := 0
	base.ProtoReflect().Range(func(protoreflect.FieldDescriptor, protoreflect.Value) bool { n++; return true })
	if all := base.ProtoReflect().Descriptor().Fields().Len(); n != all {
		t.Fatalf("the test sets %d of ServiceSpec's %d fields; set the new one", n, all)
	}
	for _, patch := range []*shoalv1.ServicePatch{
		{LabelsAdd: map[string]string{"bench": "new", "added": "a"}, LabelsRm: []string{"gone", "absent"}},
		{LabelsAdd: map[string]string{"gone": "back"}, LabelsRm: []string{"gone"}},
		{Replicas: int64p(7)},
		{LabelsRm: []string{"keep"}, Replicas: int64p(0)},
	} {
		good := PatchSpec(base, patch)
		if !isPatchOf(good, base, patch) {
			t.Fatalf("%v: PatchSpec's result is not a patch of its base", patch)
		}
		if isPatchOf(base, base, patch) {
			t.Fatalf("%v: the base itself passes", patch)
		}
		good.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			bad := copySpec(good)
			r := bad.ProtoReflect()
			switch {
			case fd.IsMap():
				m := map[string]string{"other": "o"}
				for k, v := range bad.Labels {
					m[k] = v
				}
				bad.Labels = m
			case fd.Message() != nil:
				r.Set(fd, protoreflect.ValueOfMessage(v.Message().New())) // another pointer
			case fd.Kind() == protoreflect.StringKind:
				r.Set(fd, protoreflect.ValueOfString(v.String()+"-"))
			case fd.Kind() == protoreflect.BoolKind:
				r.Set(fd, protoreflect.ValueOfBool(!v.Bool()))
			case fd.Kind() == protoreflect.EnumKind:
				r.Set(fd, protoreflect.ValueOfEnum(v.Enum()+1))
			case fd.Kind() == protoreflect.Int64Kind:
				r.Set(fd, protoreflect.ValueOfInt64(v.Int()+1))
			default:
				t.Fatalf("field %s of kind %v: teach the test to change it", fd.Name(), fd.Kind())
			}
			if isPatchOf(bad, base, patch) {
				t.Errorf("%v: a spec differing in %s passes", patch, fd.Name())
			}
			return true
		})
		for _, m := range []map[string]string{nil, {"bench": "new"}, base.Labels} {
			bad := copySpec(good)
			bad.Labels = m
			if isPatchOf(bad, base, patch) && !proto.Equal(bad, good) {
				t.Errorf("%v: labels %v pass", patch, m)
			}
		}
		bad := copySpec(good)
		bad.ProtoReflect().SetUnknown(unknownField(6))
		if isPatchOf(bad, base, patch) {
			t.Errorf("%v: other unknown fields pass", patch)
		}
	}
}

// PatchService keeps a spec the caller patched (no second PatchSpec) and
// patches again one that is not the patch of the stored spec.
func TestPatchServiceKeepsTheCallersPatchedSpec(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, func(tx WriteTx) error { return tx.Create(benchService("s1", 0)) })
	patch := &shoalv1.ServicePatch{LabelsAdd: map[string]string{"bench": "v"}}
	for _, tc := range []struct {
		name string
		spec func(cur *shoalv1.ServiceSpec) *shoalv1.ServiceSpec
		kept bool
	}{
		{"patched", func(cur *shoalv1.ServiceSpec) *shoalv1.ServiceSpec { return PatchSpec(cur, patch) }, true},
		{"other labels", func(cur *shoalv1.ServiceSpec) *shoalv1.ServiceSpec {
			return PatchSpec(cur, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"bench": "w"}})
		}, false},
		{"none", func(*shoalv1.ServiceSpec) *shoalv1.ServiceSpec { return nil }, false},
	} {
		var given, read *shoalv1.ServiceSpec
		mustUpdate(t, s, func(tx WriteTx) error {
			cur, _ := Get[*shoalv1.Service](tx, "s1")
			given = tc.spec(cur.GetSpec())
			svc := &shoalv1.Service{Meta: copyMeta(cur.GetMeta()), Spec: given, PreviousSpec: cur.GetSpec(), SpecVersion: cur.GetSpecVersion()}
			if err := tx.PatchService(svc, patch); err != nil {
				return err
			}
			got, _ := Get[*shoalv1.Service](tx, "s1")
			read = got.GetSpec()
			return nil
		})
		if kept := read == given; kept != tc.kept {
			t.Errorf("%s: the caller's spec kept: %v, want %v", tc.name, kept, tc.kept)
		}
		stored, _ := Get[*shoalv1.Service](s.View(), "s1")
		if !proto.Equal(read, stored.GetSpec()) || stored.GetSpec().GetLabels()["bench"] != "v" {
			t.Errorf("%s: the tx read %v, stored %v", tc.name, read, stored.GetSpec())
		}
	}
}
