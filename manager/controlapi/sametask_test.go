package controlapi

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func benchTask() *shoalv1.TaskSpec {
	return &shoalv1.TaskSpec{
		Container: &shoalv1.ContainerSpec{Image: "shoal-bench:none", Command: []string{"/bin/true"}, StopGraceMs: defaultStopGraceMs},
		Restart:   &shoalv1.RestartPolicy{Condition: shoalv1.RestartCondition_RESTART_CONDITION_ANY, DelayMs: defaultRestartDelayMs},
	}
}

// TestEqualTasksIsProtoEqual: equalTasks answers as proto.Equal on pairs
// that differ in each way a task can (a field, presence of a message,
// list order, map contents), and on equal ones built apart.
func TestEqualTasksIsProtoEqual(t *testing.T) {
	withLabels := func(kv ...string) *shoalv1.TaskSpec {
		tk := benchTask()
		tk.Container.Labels = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			tk.Container.Labels[kv[i]] = kv[i+1]
		}
		return tk
	}
	change := func(f func(*shoalv1.TaskSpec)) *shoalv1.TaskSpec {
		tk := benchTask()
		f(tk)
		return tk
	}
	for _, tc := range []struct {
		name string
		a, b *shoalv1.TaskSpec
	}{
		{"nil, nil", nil, nil},
		{"nil, empty", nil, &shoalv1.TaskSpec{}},
		{"empty, empty", &shoalv1.TaskSpec{}, &shoalv1.TaskSpec{}},
		{"same, built apart", benchTask(), benchTask()},
		{"image", benchTask(), change(func(tk *shoalv1.TaskSpec) { tk.Container.Image = "other:1" })},
		{"argv order", change(func(tk *shoalv1.TaskSpec) { tk.Container.Args = []string{"a", "b"} }), change(func(tk *shoalv1.TaskSpec) { tk.Container.Args = []string{"b", "a"} })},
		{"empty list, nil list", change(func(tk *shoalv1.TaskSpec) { tk.Container.Args = []string{} }), benchTask()},
		{"empty resources, no resources", change(func(tk *shoalv1.TaskSpec) { tk.Resources = &shoalv1.ResourceRequirements{} }), benchTask()},
		{"force_update", benchTask(), change(func(tk *shoalv1.TaskSpec) { tk.ForceUpdate = 1 })},
		{"map, many keys", withLabels("a", "1", "b", "2", "c", "3", "d", "4"), withLabels("d", "4", "c", "3", "b", "2", "a", "1")},
		{"map, one value", withLabels("a", "1", "b", "2"), withLabels("a", "1", "b", "3")},
		{"empty map, nil map", withLabels(), benchTask()},
		{"network", change(func(tk *shoalv1.TaskSpec) { tk.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: "n1"}} }), change(func(tk *shoalv1.TaskSpec) { tk.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: "n2"}} })},
	} {
		want := proto.Equal(tc.a, tc.b)
		if got := equalTasks(tc.a, tc.b); got != want {
			t.Errorf("%s: equalTasks = %v, proto.Equal = %v", tc.name, got, want)
		}
		if got := equalTasks(tc.b, tc.a); got != want {
			t.Errorf("%s (swapped): equalTasks = %v, proto.Equal = %v", tc.name, got, want)
		}
	}
}

// TestTaskSpecHasNoFloatField: equalTasks takes equal encodings for equal
// tasks, which a NaN would break (same bytes, unequal to proto.Equal).
// Whoever adds a float field anywhere under TaskSpec must compare tasks
// another way (or fall back to proto.Equal when the task holds a NaN).
func TestTaskSpecHasNoFloatField(t *testing.T) {
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor, path string)
	walk = func(md protoreflect.MessageDescriptor, path string) {
		if seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		fs := md.Fields()
		for i := 0; i < fs.Len(); i++ {
			f := fs.Get(i)
			p := path + "." + string(f.Name())
			switch f.Kind() {
			case protoreflect.FloatKind, protoreflect.DoubleKind:
				t.Errorf("%s is a float field: equalTasks cannot compare tasks by their encoding", p)
			case protoreflect.MessageKind, protoreflect.GroupKind:
				if f.IsMap() {
					if k := f.MapValue().Kind(); k == protoreflect.FloatKind || k == protoreflect.DoubleKind {
						t.Errorf("%s maps to floats: equalTasks cannot compare tasks by their encoding", p)
					}
					if f.MapValue().Message() != nil {
						walk(f.MapValue().Message(), p+"[]")
					}
					continue
				}
				walk(f.Message(), p)
			}
		}
	}
	walk((&shoalv1.TaskSpec{}).ProtoReflect().Descriptor(), "task")
	if len(seen) < 3 {
		t.Fatalf("walked %d messages: the walk is broken", len(seen))
	}
}

// TestEqualTasksDoesNotAllocate: the comparison every UpdateService makes
// costs no allocation once its buffers are pooled (proto.Equal made 4 per
// call on the bench's task).
func TestEqualTasksDoesNotAllocate(t *testing.T) {
	x, y := benchTask(), benchTask()
	if n := testing.AllocsPerRun(100, func() {
		if !equalTasks(x, y) {
			t.Fatal("equal tasks compared unequal")
		}
	}); n != 0 {
		t.Errorf("equalTasks allocates %v times per call, want 0", n)
	}
}

// BenchmarkEqualTasks: the comparison every UpdateService makes, on the
// bench's task (after defaults), against proto.Equal.
func BenchmarkEqualTasks(b *testing.B) {
	x, y := benchTask(), benchTask()
	b.Run("equalTasks", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !equalTasks(x, y) {
				b.Fatal("unequal")
			}
		}
	})
	b.Run("proto.Equal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !proto.Equal(x, y) {
				b.Fatal("unequal")
			}
		}
	})
}
