package controlapi

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/specrules"
)

// Swarm's defaults for a service that names no update or rollback config.
func defaultUpdateConfig() *shoalv1.UpdateConfig {
	return &shoalv1.UpdateConfig{Parallelism: 1, FailureAction: "pause", Order: "stop-first", MonitorMs: 5000}
}

// startRollout marks a write that changes the task spec (spec_version
// bumped) as the start of a rollout: the orchestrator rolls it out under
// spec.update and moves the status on from UPDATING. A paused update is
// resumed this way too: the next update starts afresh.
func startRollout(svc *shoalv1.Service, now time.Time) {
	svc.UpdateStatus = &shoalv1.UpdateStatus{State: shoalv1.UpdateState_UPDATE_STATE_UPDATING,
		StartedAt: timestamppb.New(now), Message: "update in progress"}
}

// rolloutPaused: the service's rollout stopped on failures; a new task
// spec starts a new one, a change of the update or rollback config
// resumes it (with the failures counted so far, under the new config: e.g.
// failure action continue); a scale leaves it paused.
func rolloutPaused(svc *shoalv1.Service) bool {
	s := svc.GetUpdateStatus().GetState()
	return s == shoalv1.UpdateState_UPDATE_STATE_PAUSED || s == shoalv1.UpdateState_UPDATE_STATE_ROLLBACK_PAUSED
}

// keepRolloutStart: an update that leaves the task alone (a scale, a new
// update config resuming a paused rollout) while cur's rollout is under
// way keeps the task the rollout started from as the previous spec's
// task, the rest of the previous spec being the new one. A rollback then
// still undoes the rollout and keeps the scale; otherwise previous_spec
// would become the rollout's own spec and a rollback — manual, or the
// failure action's — would go "back" to the task that was failing. Once
// the rollout ended, every update is the previous spec of the next, as in
// swarm mode.
func keepRolloutStart(cur, svc *shoalv1.Service) {
	switch cur.GetUpdateStatus().GetState() {
	case shoalv1.UpdateState_UPDATE_STATE_UPDATING, shoalv1.UpdateState_UPDATE_STATE_PAUSED,
		shoalv1.UpdateState_UPDATE_STATE_ROLLBACK_STARTED, shoalv1.UpdateState_UPDATE_STATE_ROLLBACK_PAUSED:
	default:
		return
	}
	if cur.GetPreviousSpec() == nil || !proto.Equal(svc.GetSpec().GetTask(), cur.GetSpec().GetTask()) {
		return
	}
	prev := proto.Clone(svc.GetSpec()).(*shoalv1.ServiceSpec)
	prev.Task = proto.Clone(cur.GetPreviousSpec().GetTask()).(*shoalv1.TaskSpec)
	svc.PreviousSpec = prev
}

// RollbackService makes a service's previous spec its spec again (and the
// spec it had its previous spec), and marks the rollout ROLLBACK_STARTED:
// the orchestrator rolls it out under the rollback config. A job has no
// rollout: its rollback is an update to the previous spec (a one-off
// job starts a new run with it). A service that was never updated has
// nothing to go back to.
func (s *Server) RollbackService(ctx context.Context, req *shoalv1.RollbackServiceRequest) (*shoalv1.RollbackServiceResponse, error) {
	if req.GetServiceId() == "" {
		return nil, errdefs.InvalidArgumentf("service_id: required")
	}
	var out *shoalv1.Service
	s.netMu.Lock() // networks resolved against a racing network rm
	defer s.netMu.Unlock()
	idx, err := s.store.Update(ctx, func(tx raftstore.WriteTx) error {
		cur, err := raftstore.ResolveRef[*shoalv1.Service](tx, req.GetServiceId())
		if err != nil {
			return err
		}
		if cur.GetPreviousSpec() == nil {
			return errdefs.FailedPreconditionf("service %s has no previous spec", cur.GetSpec().GetName())
		}
		svc := proto.Clone(cur).(*shoalv1.Service)
		svc.Spec, svc.PreviousSpec = svc.PreviousSpec, svc.Spec
		// A rollback writes a spec as an update does: an operator token
		// may not bring back a bind mount or a capability an admin has
		// since removed.
		if err := checkHostAccess(ctx, svc.GetSpec(), cur.GetSpec()); err != nil {
			return errdefs.PermissionDeniedf("rollback of %s to its previous spec: %w", cur.GetSpec().GetName(), err)
		}
		// The spec rolled back to was valid when it was written; what
		// changed since (networks removed, ports taken) is checked again.
		if err := resolveTaskNetworks(tx, svc.GetSpec()); err != nil {
			return err
		}
		if err := checkPortConflicts(tx, svc.GetMeta().GetId(), svc.GetSpec()); err != nil {
			return err
		}
		if !proto.Equal(svc.GetSpec().GetTask(), svc.GetPreviousSpec().GetTask()) {
			svc.SpecVersion++
		}
		if specrules.IsJob(svc.GetSpec().GetMode()) {
			// A job has no rollout: going back is an update to the
			// previous spec (a one-off job's new run uses it).
			svc.JobStatus = jobStatusAfterUpdate(cur, svc.GetSpec(), time.Now())
		} else {
			svc.UpdateStatus = &shoalv1.UpdateStatus{State: shoalv1.UpdateState_UPDATE_STATE_ROLLBACK_STARTED,
				StartedAt: timestamppb.Now(), Message: "manually requested rollback"}
		}
		out = svc
		return tx.Update(svc)
	})
	if err != nil {
		return nil, err
	}
	out = proto.Clone(out).(*shoalv1.Service)
	out.Meta.Version = idx
	s.log.Info("service rolled back", "service_id", out.GetMeta().GetId(), "spec_version", out.GetSpecVersion())
	return &shoalv1.RollbackServiceResponse{Service: out}, nil
}
