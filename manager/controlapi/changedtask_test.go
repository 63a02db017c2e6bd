package controlapi

import (
	"context"
	"strconv"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// An update refused today is refused the same way (code, field paths,
// reasons, order) whether or not UpdateService skips the rules of the task
// it checked before: a changed task is checked in full; an unchanged one
// too unless this process checked it at the very version read; the rest of
// the spec always.
func TestUpdateServiceRefusesAsFullValidation(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*shoalv1.ServiceSpec)
		want   string // a field path the error names
	}{
		{"changed task: bad image", func(s *shoalv1.ServiceSpec) { s.Task.Container.Image = "Demo:latest" }, "spec.task.container.image"},
		{"changed task: bad env", func(s *shoalv1.ServiceSpec) { s.Task.Container.Env = []string{"A=1", "=x"} }, "spec.task.container.env[1]"},
		{"changed task: NUL in args", func(s *shoalv1.ServiceSpec) { s.Task.Container.Args = []string{"ok", "a\x00b"} }, "spec.task.container.args[1]"},
		{"changed task: bad constraint", func(s *shoalv1.ServiceSpec) {
			s.Task.Placement = &shoalv1.Placement{Constraints: []string{"node.role ~ x"}}
		}, "spec.task.placement.constraints[0]"},
		{"changed task: bad restart", func(s *shoalv1.ServiceSpec) {
			s.Task.Restart = &shoalv1.RestartPolicy{DelayMs: -1}
		}, "spec.task.restart.delay_ms"},
		{"unchanged task: bad label", func(s *shoalv1.ServiceSpec) { s.Labels = map[string]string{"-x": "1"} }, `spec.labels["-x"]`},
		{"unchanged task: bad label value", func(s *shoalv1.ServiceSpec) { s.Labels = map[string]string{"ok": "a\x00"} }, `spec.labels["ok"]`},
		{"unchanged task: negative replicas", func(s *shoalv1.ServiceSpec) { s.Replicas = -1 }, "spec.replicas"},
		{"unchanged task: ports without a network", func(s *shoalv1.ServiceSpec) {
			s.Endpoint = &shoalv1.EndpointSpec{Ports: []*shoalv1.PortConfig{{TargetPort: 80, PublishedPort: 8080, Protocol: "tcp"}}}
		}, "spec.endpoint.ports"},
		{"unchanged task: bad update config", func(s *shoalv1.ServiceSpec) {
			s.Update = &shoalv1.UpdateConfig{Parallelism: -1}
		}, "spec.update"},
		{"both: name and image", func(s *shoalv1.ServiceSpec) { s.Name = "no way"; s.Task.Container.Image = "Demo:latest" }, "spec.name"},
	}
	s, _ := newServer(t)
	ctx := context.Background()
	created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: validSpec()})
	if err != nil {
		t.Fatal(err)
	}
	svc := created.GetService()
	// One accepted update with the task unchanged, so that the memo holds
	// the version every case below reads.
	up, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: svc.GetMeta().GetId(), Version: svc.GetMeta().GetVersion(), Spec: validSpec()})
	if err != nil {
		t.Fatal(err)
	}
	svc = up.GetService()
	if !s.checked.has(svc.GetMeta().GetId(), svc.GetMeta().GetVersion()) {
		t.Fatal("the accepted update is not remembered as checked")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := validSpec()
			tt.mutate(spec)
			want := validateServiceSpec(proto.Clone(spec).(*shoalv1.ServiceSpec))
			if want == nil {
				t.Fatal("the case is valid by full validation")
			}
			_, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: svc.GetMeta().GetId(), Version: svc.GetMeta().GetVersion(), Spec: spec})
			wantCode(t, err, codes.InvalidArgument, tt.want)
			if err.Error() != want.Error() {
				t.Errorf("UpdateService: %v\nfull validation: %v", err, want)
			}
		})
	}
}

// A stored task that today's rules refuse (stored by an older release
// with looser rules; here written straight into the store) is refused, as
// before, when an update leaves it as it is: this process never checked
// it. Only a version this process wrote after checking its task lets the
// task's rules be skipped.
func TestUpdateServiceChecksStoredTaskNotCheckedHere(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	old := fillDefaults(validSpec())
	old.Task.Container.Image = "Demo:latest" // refused by today's rules
	id := raftstore.NewID()
	if _, err := st.Update(ctx, func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Service{Meta: &shoalv1.Meta{Id: id}, Spec: old, SpecVersion: 1})
	}); err != nil {
		t.Fatal(err)
	}
	stored, _ := raftstore.Get[*shoalv1.Service](st.View(), id)
	update := func() error {
		spec := proto.Clone(old).(*shoalv1.ServiceSpec)
		spec.Labels = map[string]string{"changed": "yes"}
		_, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: id, Version: stored.GetMeta().GetVersion(), Spec: spec})
		return err
	}
	err := update()
	wantCode(t, err, codes.InvalidArgument, "spec.task.container.image")
	full := proto.Clone(old).(*shoalv1.ServiceSpec)
	full.Labels = map[string]string{"changed": "yes"}
	if want := validateServiceSpec(full); want == nil || err.Error() != want.Error() {
		t.Errorf("UpdateService: %v\nfull validation: %v", err, want)
	}
	// A memo naming another version of the service does not count.
	s.checked.add(id, stored.GetMeta().GetVersion()+1000)
	wantCode(t, update(), codes.InvalidArgument, "spec.task.container.image")
	// The memo naming the version read is what lets the task's rules be
	// skipped (shown here with a task they would refuse).
	s.checked = checkedTasks{}
	s.checked.add(id, stored.GetMeta().GetVersion())
	if err := update(); err != nil {
		t.Fatalf("task checked at the version read, unchanged: %v", err)
	}
}

// A changed task is checked even at a remembered version, and an update
// that changes it is remembered only once it is stored.
func TestUpdateServiceChangedTaskChecked(t *testing.T) {
	s, _ := newServer(t)
	ctx := context.Background()
	created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: validSpec()})
	if err != nil {
		t.Fatal(err)
	}
	svc := created.GetService()
	id := svc.GetMeta().GetId()
	if !s.checked.has(id, svc.GetMeta().GetVersion()) {
		t.Fatal("CreateService's task is not remembered as checked")
	}
	spec := validSpec()
	spec.Task.Container.Image = "Demo:latest"
	_, err = s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: id, Version: svc.GetMeta().GetVersion(), Spec: spec})
	wantCode(t, err, codes.InvalidArgument, "spec.task.container.image")
	spec = validSpec()
	spec.Task.Container.Image = "demo:2"
	up, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: id, Version: svc.GetMeta().GetVersion(), Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if v := up.GetService().GetMeta().GetVersion(); !s.checked.has(id, v) || s.checked.has(id, svc.GetMeta().GetVersion()) {
		t.Errorf("memo after the update: has(new %d) %v, has(old) %v", v, s.checked.has(id, v), s.checked.has(id, svc.GetMeta().GetVersion()))
	}
	if up.GetService().GetSpecVersion() != svc.GetSpecVersion()+1 {
		t.Errorf("spec_version %d after a task change, want %d", up.GetService().GetSpecVersion(), svc.GetSpecVersion()+1)
	}
	if _, err := s.RemoveService(ctx, &shoalv1.RemoveServiceRequest{Ref: id}); err != nil {
		t.Fatal(err)
	}
	if len(s.checked.m) != 0 {
		t.Errorf("memo keeps a removed service: %v", s.checked.m)
	}
}

// An update of a missing service with an invalid spec is still refused
// as invalid (validation came before the lookup, and still does).
func TestUpdateServiceInvalidBeforeNotFound(t *testing.T) {
	s, _ := newServer(t)
	spec := validSpec()
	spec.Task.Container.Image = "Demo:latest"
	_, err := s.UpdateService(context.Background(), &shoalv1.UpdateServiceRequest{ServiceId: "nope", Version: 3, Spec: spec})
	wantCode(t, err, codes.InvalidArgument, "spec.task.container.image")
	_, err = s.UpdateService(context.Background(), &shoalv1.UpdateServiceRequest{ServiceId: "nope", Version: 3})
	wantCode(t, err, codes.InvalidArgument, "spec: required")
	_, err = s.UpdateService(context.Background(), &shoalv1.UpdateServiceRequest{ServiceId: "nope", Version: 3, Spec: validSpec()})
	wantCode(t, err, codes.NotFound, "nope")
}

func TestCheckedTasks(t *testing.T) {
	var c checkedTasks
	if c.has("a", 0) || c.has("a", 1) {
		t.Fatal("empty memo has entries")
	}
	c.add("a", 0)
	if c.has("a", 0) {
		t.Error("version 0 (no version) remembered")
	}
	c.add("a", 5)
	c.add("a", 3) // an earlier write answered later
	if !c.has("a", 5) || c.has("a", 3) {
		t.Errorf("has(5) %v has(3) %v, want the later version kept", c.has("a", 5), c.has("a", 3))
	}
	for i := 0; i < maxCheckedTasks; i++ {
		c.add(strconv.Itoa(i), 1)
	}
	if len(c.m) > maxCheckedTasks {
		t.Errorf("memo holds %d, bound %d", len(c.m), maxCheckedTasks)
	}
	c.forget("a")
	if c.has("a", 5) {
		t.Error("forgotten service still remembered")
	}
}

// copyMeta keeps every field of a meta (a field added to Meta and not to
// copyMeta fails here).
func TestCopyMetaCopiesEveryField(t *testing.T) {
	m := &shoalv1.Meta{}
	fillEveryField(t, m.ProtoReflect())
	if got := copyMeta(m); !proto.Equal(got, m) || got == m {
		t.Errorf("copyMeta(%v) = %v", m, got)
	}
}

// fillEveryField sets every singular scalar and message field of m (and
// of its message fields) to a value other than its zero value.
func fillEveryField(t *testing.T, m protoreflect.Message) {
	t.Helper()
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.IsList() || fd.IsMap() {
			t.Fatalf("fillEveryField: %s is repeated; extend the helper", fd.FullName())
		}
		switch fd.Kind() {
		case protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString("x"))
		case protoreflect.Uint64Kind:
			m.Set(fd, protoreflect.ValueOfUint64(7))
		case protoreflect.Int64Kind:
			m.Set(fd, protoreflect.ValueOfInt64(7))
		case protoreflect.Int32Kind:
			m.Set(fd, protoreflect.ValueOfInt32(7))
		case protoreflect.MessageKind:
			fillEveryField(t, m.Mutable(fd).Message())
		default:
			t.Fatalf("fillEveryField: %s is a %s; extend the helper", fd.FullName(), fd.Kind())
		}
	}
}

// An update that names a network by name, where the stored task holds the
// network's id, leaves the task as it is: no new spec_version, no rollout
// (the comparison is of the task to store, after names became ids), and
// the task stored after such a resolution is not remembered as checked.
func TestUpdateServiceNetworkByNameIsSameTask(t *testing.T) {
	s, _ := newServer(t)
	ctx := context.Background()
	nw, err := s.CreateNetwork(ctx, &shoalv1.CreateNetworkRequest{Spec: &shoalv1.NetworkSpec{Name: "front"}})
	if err != nil {
		t.Fatal(err)
	}
	withNet := func(target string) *shoalv1.ServiceSpec {
		spec := validSpec()
		spec.Task.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: target}}
		return spec
	}
	created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: withNet("front")})
	if err != nil {
		t.Fatal(err)
	}
	svc := created.GetService()
	id := svc.GetMeta().GetId()
	if got := svc.GetSpec().GetTask().GetNetworks()[0].GetTarget(); got != nw.GetNetwork().GetMeta().GetId() {
		t.Fatalf("stored target %q, want the network's id", got)
	}
	if s.checked.has(id, svc.GetMeta().GetVersion()) {
		t.Error("a task whose network names were resolved is remembered as checked")
	}
	spec := withNet("front")
	spec.Labels = map[string]string{"v": "2"}
	up, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: id, Version: svc.GetMeta().GetVersion(), Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if got := up.GetService(); got.GetSpecVersion() != svc.GetSpecVersion() || got.GetUpdateStatus() != nil {
		t.Errorf("a label change naming the same network by name: spec_version %d → %d, update_status %v; want no change and no rollout",
			svc.GetSpecVersion(), got.GetSpecVersion(), got.GetUpdateStatus())
	}
	if s.checked.has(id, up.GetService().GetMeta().GetVersion()) {
		t.Error("a task whose network names were resolved is remembered as checked")
	}
	// Named by id, as stored: the same task, checked and remembered.
	spec = withNet(nw.GetNetwork().GetMeta().GetId())
	up2, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: id, Version: up.GetService().GetMeta().GetVersion(), Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if up2.GetService().GetSpecVersion() != svc.GetSpecVersion() || !s.checked.has(id, up2.GetService().GetMeta().GetVersion()) {
		t.Errorf("named by id: spec_version %d (want %d), remembered %v (want true)", up2.GetService().GetSpecVersion(), svc.GetSpecVersion(),
			s.checked.has(id, up2.GetService().GetMeta().GetVersion()))
	}
}
