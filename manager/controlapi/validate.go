package controlapi

import (
	"fmt"
	"github.com/shoal-dev/shoal/errdefs"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/scheduler"
	"github.com/shoal-dev/shoal/specrules"
)

// The rules of a spec live in package specrules, shared with the agent;
// this file only adds what needs more than a spec (placement constraints
// are parsed by the scheduler) and turns the problems into an
// invalid-argument error.

// validateServiceSpec checks a service spec and returns every problem with
// its field path.
func validateServiceSpec(spec *shoalv1.ServiceSpec) error {
	return validateServiceUpdate(spec, false)
}

// validateServiceUpdate checks a service spec as validateServiceSpec does,
// except for its task when taskAccepted (see specrules.ServiceUpdate and
// checkedTasks): the placement constraints are the task's too.
func validateServiceUpdate(spec *shoalv1.ServiceSpec, taskAccepted bool) error {
	p := specrules.ServiceUpdate(spec, taskAccepted)
	if taskAccepted {
		return invalidProblems(p)
	}
	for i, expr := range spec.GetTask().GetPlacement().GetConstraints() {
		if len(expr) > specrules.MaxConstraint {
			continue // already said
		}
		if _, err := scheduler.ParseConstraint(expr); err != nil {
			p.Add(fmt.Sprintf("spec.task.placement.constraints[%d]", i), "%v", err)
		}
	}
	return invalidProblems(p)
}

// validateNodeSpec checks a node spec update.
func validateNodeSpec(spec *shoalv1.NodeSpec) error {
	return invalidProblems(specrules.NodeSpec(spec))
}

func invalidProblems(p specrules.Problems) error {
	if len(p) == 0 {
		return nil
	}
	return errdefs.InvalidArgumentf("%w", p)
}

// fieldErrors collects problems the Control API finds itself (in a
// transaction, against the stored object), worded like specrules'.
type fieldErrors struct{ p specrules.Problems }

func (f *fieldErrors) add(field, format string, args ...any) { f.p.Add(field, format, args...) }

func (f fieldErrors) err() error { return invalidProblems(f.p) }

// checkVersion refuses an update that names no version: the store treats
// version 0 as "skip the optimistic concurrency check", which must be
// asked for explicitly (ignore_version), never be what a caller that
// forgot the version gets.
func checkVersion(version uint64, ignore bool) error {
	if version == 0 && !ignore {
		return errdefs.InvalidArgumentf("version: required (the meta.version of the object as read; set ignore_version to overwrite whatever is stored)")
	}
	return nil
}
