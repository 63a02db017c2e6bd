package controlapi

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/specrules"
)

// Defaults an operator coming from swarm mode expects.
const (
	defaultRestartDelayMs = 5000
)

// defaultStopGraceMs is the agent's default too (see specrules).
var defaultStopGraceMs = specrules.DefaultStopGrace.Milliseconds()

// fillDefaults fills the fields a spec may leave out, in spec itself, and
// returns it. The spec must have passed validation (a task with a
// container).
func fillDefaults(spec *shoalv1.ServiceSpec) *shoalv1.ServiceSpec {
	taskDefaults(spec)
	jobDefaults(spec)
	if spec.Update == nil {
		spec.Update = defaultUpdateConfig()
	}
	if spec.Rollback == nil {
		spec.Rollback = defaultUpdateConfig()
	}
	return spec
}

// taskDefaults fills the task template's defaults (restart policy: on
// failure for a job, any otherwise; stop grace period), in spec itself,
// and leaves a spec without a task or container as it is (validation
// refuses it). It may run before validation: the values it fills are ones
// specrules.Task accepts in fields whose unset value it accepts too, and no
// rule of the service outside the task reads them, so a spec has the same
// problems before and after; UpdateService fills them first so that the
// task it compares with the stored one is the task it would store.
func taskDefaults(spec *shoalv1.ServiceSpec) {
	t := spec.GetTask()
	if t == nil {
		return
	}
	if t.Restart == nil {
		cond := shoalv1.RestartCondition_RESTART_CONDITION_ANY
		if specrules.IsJob(spec.GetMode()) {
			cond = shoalv1.RestartCondition_RESTART_CONDITION_ON_FAILURE
		}
		t.Restart = &shoalv1.RestartPolicy{Condition: cond, DelayMs: defaultRestartDelayMs}
	}
	if c := t.GetContainer(); c != nil && c.StopGraceMs == 0 {
		c.StopGraceMs = defaultStopGraceMs
	}
}

// networkTargets lists a spec's network targets (nil without networks:
// no allocation for the common case).
func networkTargets(spec *shoalv1.ServiceSpec) []string {
	ns := spec.GetTask().GetNetworks()
	if len(ns) == 0 {
		return nil
	}
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.GetTarget()
	}
	return out
}

// copyMeta copies a stored object's meta for a new version of it: the
// timestamps are shared (stored objects are never changed in place, and
// the store stamps new ones on what it stores).
func copyMeta(m *shoalv1.Meta) *shoalv1.Meta {
	return &shoalv1.Meta{Id: m.GetId(), Version: m.GetVersion(), CreatedAt: m.GetCreatedAt(), UpdatedAt: m.GetUpdatedAt()}
}

// CreateService validates and stores a new service; the orchestrator then
// creates its tasks.
func (s *Server) CreateService(ctx context.Context, req *shoalv1.CreateServiceRequest) (*shoalv1.CreateServiceResponse, error) {
	if err := checkView(req.GetView()); err != nil {
		return nil, err
	}
	if err := validateServiceSpec(req.GetSpec()); err != nil {
		return nil, err
	}
	if err := checkHostAccess(ctx, req.GetSpec(), nil); err != nil {
		return nil, err
	}
	// The request is this call's own (see UpdateService): the defaults
	// go into it instead of into a copy.
	svc := &shoalv1.Service{
		Meta:        &shoalv1.Meta{Id: raftstore.NewID()},
		Spec:        fillDefaults(req.GetSpec()),
		SpecVersion: 1,
	}
	targets := networkTargets(svc.GetSpec())
	defer s.lockServiceWrite(svc.GetSpec())()
	idx, err := s.store.Update(ctx, func(tx raftstore.WriteTx) error {
		if err := s.checkMaxReplicas(tx, svc.GetSpec()); err != nil {
			return err
		}
		if err := resolveTaskNetworks(tx, svc.GetSpec()); err != nil {
			return err
		}
		if err := checkSpreadLabels(tx, svc.GetSpec(), nil); err != nil {
			return err
		}
		if err := checkPortConflicts(tx, "", svc.GetSpec()); err != nil {
			return err
		}
		return tx.Create(svc)
	})
	if err != nil {
		return nil, err
	}
	// svc went to the store, which copies what it stores: the reply
	// shares its spec and carries a meta of its own.
	if slices.Equal(targets, networkTargets(svc.GetSpec())) { // else not the task checked (see UpdateService)
		s.checked.add(svc.GetMeta().GetId(), idx)
	}
	meta := copyMeta(svc.GetMeta())
	meta.Version = idx
	out := &shoalv1.Service{Meta: meta, Spec: svc.GetSpec(), SpecVersion: svc.GetSpecVersion()}
	s.log.Info("service created", "service_id", svc.GetMeta().GetId(), "name", svc.GetSpec().GetName())
	return &shoalv1.CreateServiceResponse{Service: replyService(out, req.GetView())}, nil
}

// GetService resolves a service by id, name or unique id prefix.
func (s *Server) GetService(ctx context.Context, req *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error) {
	r, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	svc, err := raftstore.ResolveRef[*shoalv1.Service](r, req.GetRef())
	if err != nil {
		return nil, err
	}
	return &shoalv1.GetServiceResponse{Service: viewService(callerIsViewer(ctx), svc)}, nil
}

// ListServices returns services with their running/desired task counts.
func (s *Server) ListServices(ctx context.Context, req *shoalv1.ListServicesRequest) (*shoalv1.ListServicesResponse, error) {
	if err := checkFilters(req.GetFilters(), "id", "name", "label", "mode"); err != nil {
		return nil, err
	}
	r, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	resp := &shoalv1.ListServicesResponse{Replicas: map[string]*shoalv1.ReplicaCount{}}
	f := req.GetFilters()
	rng := listRange[*shoalv1.Service]{index: raftstore.IndexID, value: f["id"],
		keep: func(svc *shoalv1.Service) bool { return serviceMatches(svc, f) }}
	if f["name"] != "" {
		rng.index, rng.value = raftstore.IndexName, f["name"]
	}
	if resp.Services, resp.NextPageToken, resp.Total, err = listPage(r, req.GetPage(), f, rng); err != nil {
		return nil, err
	}
	viewer := callerIsViewer(ctx)
	for i, svc := range resp.Services {
		resp.Replicas[svc.GetMeta().GetId()] = replicaCount(r, svc)
		resp.Services[i] = viewService(viewer, svc)
	}
	return resp, nil
}

func serviceMatches(svc *shoalv1.Service, f map[string]string) bool {
	for k, v := range f {
		switch k {
		case "id":
			if !strings.HasPrefix(svc.GetMeta().GetId(), v) {
				return false
			}
		case "name":
			if svc.GetSpec().GetName() != v {
				return false
			}
		case "label":
			if !labelMatches(svc.GetSpec().GetLabels(), v) {
				return false
			}
		case "mode":
			if !enumIs(svc.GetSpec().GetMode().String(), v) {
				return false
			}
		}
	}
	return true
}

func replicaCount(r raftstore.Reader, svc *shoalv1.Service) *shoalv1.ReplicaCount {
	if specrules.IsJob(svc.GetSpec().GetMode()) {
		return jobReplicaCount(r, svc)
	}
	rc := &shoalv1.ReplicaCount{}
	live := int64(0)
	for _, t := range raftstore.Find[*shoalv1.Task](r, raftstore.IndexServiceID, svc.GetMeta().GetId()) {
		if t.GetDesiredState() > shoalv1.TaskState_TASK_STATE_RUNNING || t.GetStatus().GetState() >= shoalv1.TaskState_TASK_STATE_COMPLETE {
			continue
		}
		live++
		if t.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_RUNNING {
			rc.Running++
		}
	}
	if svc.GetSpec().GetMode() == shoalv1.ServiceMode_SERVICE_MODE_GLOBAL {
		rc.Desired = live
	} else {
		rc.Desired = svc.GetSpec().GetReplicas()
	}
	return rc
}

// UpdateService replaces a service's spec. The caller names the version it
// read; a concurrent change makes the update fail rather than be lost.
func (s *Server) UpdateService(ctx context.Context, req *shoalv1.UpdateServiceRequest) (*shoalv1.UpdateServiceResponse, error) {
	if err := checkView(req.GetView()); err != nil {
		return nil, err
	}
	if err := checkVersion(req.GetVersion(), req.GetIgnoreVersion()); err != nil {
		return nil, err
	}
	// The request is this call's own (gRPC and the HTTP gateway decode a
	// fresh one for every call and read nothing of it after the handler),
	// so the defaults go into it instead of into a copy of the spec. What
	// the checks below read of it (name, mode, replicas, job schedule,
	// networks, ports, host access) the defaults do not change. The task's
	// defaults go in before validation (taskDefaults says why that changes
	// no verdict), so that the task compared with the stored one below is
	// the one that would be stored.
	spec := req.GetSpec()
	taskDefaults(spec)
	var out *shoalv1.Service
	// sameTask: the task to store equals the stored one; resolved: it is
	// not the task validation saw (network names became ids).
	sameTask, taskAccepted, resolved := false, false, false
	sent := newSentTask()
	defer sent.release()
	defer s.lockServiceWrite(spec)()
	idx, err := s.updateIgnoringVersion(ctx, req.GetIgnoreVersion(), func(tx raftstore.WriteTx) error {
		cur, ok := raftstore.Get[*shoalv1.Service](tx, req.GetServiceId())
		// A task left as stored by a write this process checked is not
		// checked again (checkedTasks); anything else is, in full, and
		// before "not found", as it always was. The memo also holds the
		// encoding of the task this process wrote at that version, so the
		// stored task need not be encoded again to be compared.
		sent.encode(spec.GetTask())
		known, same := false, false
		if ok {
			known, same = s.checked.sameEncoding(cur.GetMeta().GetId(), cur.GetMeta().GetVersion(), sent.enc)
		}
		switch {
		case !ok:
			sameTask, taskAccepted = false, false
		case known:
			// Equal encodings are equal tasks (equalTasks); different
			// ones are asked of proto.Equal, as equalTasks would.
			sameTask = same || proto.Equal(spec.GetTask(), cur.GetSpec().GetTask())
			taskAccepted = sameTask
		default:
			sameTask = sent.equal(cur.GetSpec().GetTask())
			taskAccepted = sameTask && s.checked.has(cur.GetMeta().GetId(), cur.GetMeta().GetVersion())
		}
		if err := validateServiceUpdate(spec, taskAccepted); err != nil {
			return err
		}
		if !ok {
			return notFound("service", req.GetServiceId())
		}
		fillDefaults(spec)
		if err := checkHostAccess(ctx, spec, cur.GetSpec()); err != nil {
			return err
		}
		if err := s.checkMaxReplicas(tx, spec); err != nil {
			return err
		}
		var fe fieldErrors
		if spec.GetName() != cur.GetSpec().GetName() {
			fe.add("spec.name", "cannot be changed (is %q)", cur.GetSpec().GetName())
		}
		if spec.GetMode() != cur.GetSpec().GetMode() {
			fe.add("spec.mode", "cannot be changed (is %s)", cur.GetSpec().GetMode())
		}
		if err := fe.err(); err != nil {
			return err
		}
		// Stored objects are immutable, so the new version shares the
		// old spec (as previous_spec) instead of deep-copying it.
		svc := nextService(cur, spec)
		targets := networkTargets(spec)
		if err := resolveTaskNetworks(tx, svc.GetSpec()); err != nil {
			return err
		}
		if !slices.Equal(targets, networkTargets(spec)) {
			// Networks named by name or id prefix now name ids: the task
			// to store is not the one compared (nor, literally, the one
			// checked) above.
			sameTask = equalTasks(spec.GetTask(), cur.GetSpec().GetTask())
			resolved = true
		}
		if err := checkSpreadLabels(tx, svc.GetSpec(), cur.GetSpec()); err != nil {
			return err
		}
		if err := checkPortConflicts(tx, cur.GetMeta().GetId(), svc.GetSpec()); err != nil {
			return err
		}
		switch {
		case !sameTask:
			svc.SpecVersion++
			if !specrules.IsJob(svc.GetSpec().GetMode()) {
				// A job has no rollout: its next run (or firing) uses the
				// new spec, and nothing would move a status on.
				startRollout(svc, time.Now())
			}
		case specrules.IsJob(svc.GetSpec().GetMode()):
		case rolloutPaused(cur) && (!proto.Equal(svc.GetSpec().GetUpdate(), cur.GetSpec().GetUpdate()) ||
			!proto.Equal(svc.GetSpec().GetRollback(), cur.GetSpec().GetRollback())):
			startRollout(svc, time.Now()) // e.g. failure action continue now
		}
		keepRolloutStart(cur, svc)
		if !req.GetIgnoreVersion() {
			svc.Meta.Version = req.GetVersion()
		} // else checked against the version read (updateIgnoringVersion)
		out = svc
		return tx.Update(svc)
	})
	if err != nil {
		return nil, err
	}
	// The task stored by this call passed the rules (or was the one they
	// accepted at the version read), unless resolving networks changed it.
	if !resolved {
		s.checked.addEncoded(out.GetMeta().GetId(), idx, sent.enc)
	}
	meta := copyMeta(out.GetMeta())
	meta.Version = idx
	out = &shoalv1.Service{Meta: meta, Spec: out.GetSpec(), PreviousSpec: out.GetPreviousSpec(), SpecVersion: out.GetSpecVersion(), Vips: out.GetVips(),
		UpdateStatus: out.GetUpdateStatus(), JobStatus: out.GetJobStatus(), RebalanceRequested: out.GetRebalanceRequested()}
	s.log.Debug("service updated", "service_id", out.GetMeta().GetId(), "spec_version", out.GetSpecVersion())
	return &shoalv1.UpdateServiceResponse{Service: replyService(out, req.GetView())}, nil
}

// RemoveService deletes a service; the orchestrator shuts down and removes
// its tasks.
func (s *Server) RemoveService(ctx context.Context, req *shoalv1.RemoveServiceRequest) (*shoalv1.RemoveServiceResponse, error) {
	var id string
	_, err := s.store.Update(ctx, func(tx raftstore.WriteTx) error {
		svc, err := raftstore.ResolveRef[*shoalv1.Service](tx, req.GetRef())
		if err != nil {
			return err
		}
		id = svc.GetMeta().GetId()
		return tx.Delete(raftstore.KindService, id, svc.GetMeta().GetVersion())
	})
	if err != nil {
		return nil, err
	}
	s.checked.forget(id)
	s.log.Info("service removed", "service_id", id)
	return &shoalv1.RemoveServiceResponse{}, nil
}

// RebalanceService asks the orchestrator to spread a replicated service's
// tasks evenly again over the nodes that can take them: it sets
// rebalance_requested, which the orchestrator clears once the spread is
// even (manager/orchestrator/rebalance.go). Asking again while a rebalance
// runs changes nothing.
func (s *Server) RebalanceService(ctx context.Context, req *shoalv1.RebalanceServiceRequest) (*shoalv1.RebalanceServiceResponse, error) {
	if req.GetServiceId() == "" {
		return nil, errdefs.InvalidArgumentf("service_id: required")
	}
	var out *shoalv1.Service
	wrote := false
	idx, err := s.store.Update(ctx, func(tx raftstore.WriteTx) error {
		wrote = false
		cur, ok := raftstore.Get[*shoalv1.Service](tx, req.GetServiceId())
		if !ok {
			return notFound("service", req.GetServiceId())
		}
		if m := cur.GetSpec().GetMode(); m != shoalv1.ServiceMode_SERVICE_MODE_REPLICATED {
			return errdefs.FailedPreconditionf("service %q is %s: only replicated services are rebalanced (the others run where their mode puts them)",
				cur.GetSpec().GetName(), strings.ToLower(strings.TrimPrefix(m.String(), "SERVICE_MODE_")))
		}
		out = cur
		if cur.GetRebalanceRequested() {
			return nil
		}
		svc := proto.Clone(cur).(*shoalv1.Service)
		svc.RebalanceRequested = true
		out, wrote = svc, true
		return tx.Update(svc)
	})
	if err != nil {
		return nil, err
	}
	resp := proto.Clone(out).(*shoalv1.Service)
	if wrote {
		resp.Meta.Version = idx
	}
	s.log.Info("service rebalance requested", "service_id", out.GetMeta().GetId())
	return &shoalv1.RebalanceServiceResponse{Service: resp}, nil
}

// DefaultMaxReplicas is the cluster setting max_replicas when unset.
const DefaultMaxReplicas = specrules.DefaultMaxReplicas

// checkMaxReplicas refuses a replica count above the cluster setting
// max_replicas, read in the same transaction as the write. The
// orchestrator, scheduler and dispatcher handle any count in bounded
// chunks; the cap bounds the total a single call can ask of the cluster
// (memory on every manager, one task set per node).
func (s *Server) checkMaxReplicas(r raftstore.Reader, spec *shoalv1.ServiceSpec) error {
	if limit := s.maxReplicas(r); spec.GetReplicas() > limit {
		return errdefs.InvalidArgumentf("spec.replicas: %d is above the cluster setting max-replicas = %d", spec.GetReplicas(), limit)
	}
	return nil
}

// maxReplicas is the cluster setting max_replicas as r has it.
func (s *Server) maxReplicas(r raftstore.Reader) int64 {
	if c, ok := s.theCluster(r); ok && c.GetSettings().GetMaxReplicas() > 0 {
		return c.GetSettings().GetMaxReplicas()
	}
	return DefaultMaxReplicas
}

// nextService is the new version of cur with spec: the old spec as
// previous_spec (shared: stored objects are immutable), what the managers
// own carried over (the allocator adjusts the VIPs), a one-off job's run
// restarted by jobStatusAfterUpdate. UpdateService and PatchService both
// build their write from it.
func nextService(cur *shoalv1.Service, spec *shoalv1.ServiceSpec) *shoalv1.Service {
	return &shoalv1.Service{
		Meta:               copyMeta(cur.GetMeta()),
		Spec:               spec,
		PreviousSpec:       cur.GetSpec(),
		SpecVersion:        cur.GetSpecVersion(),
		Vips:               cur.GetVips(),
		UpdateStatus:       cur.GetUpdateStatus(),
		JobStatus:          jobStatusAfterUpdate(cur, spec, time.Now()),
		RebalanceRequested: cur.GetRebalanceRequested(),
	}
}
