package controlapi

import (
	"context"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/manager/forward"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/specrules"
	"github.com/shoal-dev/shoal/trust"
)

// RedactedValue stands, for a viewer token, in place of each environment
// variable's value.
//
// Shoal has no secret objects yet, so a task's environment is where
// passwords and keys are put. A viewer token is what a dashboard, a
// wallboard or a monitoring system holds — Kubernetes' view role, which
// reads pods but not Secrets, is the model — so it reads the names of the
// variables (what a service is configured with) and never their values.
// Operators and admins read them: they write specs back whole (an update
// names every field), and may set them anyway. See docs/security.md.
// No spec may hold it (specrules refuses it), so a spec read with a viewer
// token cannot be written back over the real values.
const RedactedValue = specrules.RedactedEnvValue

// callerIsViewer reports whether the caller authenticated with a viewer
// API token (certificates and stronger tokens read everything).
func callerIsViewer(ctx context.Context) bool {
	id, ok := forward.Identity(ctx)
	return ok && trust.TokenRoleOf(id) == trust.TokenViewer
}

// hasEnvValue: some NAME=value of env has a value to hide.
func hasEnvValue(env []string) bool {
	for _, e := range env {
		if _, v, ok := strings.Cut(e, "="); ok && v != "" {
			return true
		}
	}
	return false
}

// redactEnv replaces each value in env (NAME=value) with RedactedValue.
func redactEnv(env []string) []string {
	out := make([]string, len(env))
	for i, e := range env {
		name, v, ok := strings.Cut(e, "=")
		if ok && v != "" {
			e = name + "=" + RedactedValue
		}
		out[i] = e
	}
	return out
}

// viewService is svc as the caller may see it: for a viewer token, a copy
// with the environment values of its spec and previous spec redacted
// (svc itself is the store's and is never changed).
func viewService(viewer bool, svc *shoalv1.Service) *shoalv1.Service {
	if !viewer || (!hasEnvValue(svc.GetSpec().GetTask().GetContainer().GetEnv()) && !hasEnvValue(svc.GetPreviousSpec().GetTask().GetContainer().GetEnv())) {
		return svc
	}
	out := proto.Clone(svc).(*shoalv1.Service)
	for _, sp := range []*shoalv1.ServiceSpec{out.GetSpec(), out.GetPreviousSpec()} {
		if c := sp.GetTask().GetContainer(); c != nil {
			c.Env = redactEnv(c.GetEnv())
		}
	}
	return out
}

// viewTask is viewService for a task's copy of the task spec.
func viewTask(viewer bool, t *shoalv1.Task) *shoalv1.Task {
	if !viewer || !hasEnvValue(t.GetSpec().GetContainer().GetEnv()) {
		return t
	}
	out := proto.Clone(t).(*shoalv1.Task)
	out.Spec.Container.Env = redactEnv(out.GetSpec().GetContainer().GetEnv())
	return out
}

// viewEvent is viewService and viewTask for a watch event's object.
func viewEvent(viewer bool, ev *shoalv1.WatchEvent) *shoalv1.WatchEvent {
	if !viewer {
		return ev
	}
	switch o := ev.GetObject().GetObject().(type) {
	case *shoalv1.StoreObject_Service:
		if v := viewService(true, o.Service); v != o.Service {
			return &shoalv1.WatchEvent{Index: ev.GetIndex(), Action: ev.GetAction(), Object: &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Service{Service: v}}}
		}
	case *shoalv1.StoreObject_Task:
		if v := viewTask(true, o.Task); v != o.Task {
			return &shoalv1.WatchEvent{Index: ev.GetIndex(), Action: ev.GetAction(), Object: &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Task{Task: v}}}
		}
	}
	return ev
}
