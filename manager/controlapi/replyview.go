package controlapi

import shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"

// checkView refuses a reply view this manager does not know, before
// anything is written: a newer client asking for a view it would not get
// is told so instead of silently answered with another one.
func checkView(v shoalv1.ServiceView) error {
	switch v {
	case shoalv1.ServiceView_SERVICE_VIEW_FULL, shoalv1.ServiceView_SERVICE_VIEW_BRIEF:
		return nil
	}
	var fe fieldErrors
	fe.add("view", "unknown value %d (known: SERVICE_VIEW_FULL, SERVICE_VIEW_BRIEF)", int32(v))
	return fe.err()
}

// replyService is the service a write's reply carries for the view asked
// for: out whole, or without its spec and previous spec for a brief
// view. At 256 writers the whole service (two specs) was the leader's
// largest reply cost (9 % of its CPU, docs/performance.md); a writer that
// keeps the spec it sent needs only the new version. out is the reply's
// own (the handlers build it; it shares the specs with the store, so they
// are dropped from it, never cleared).
func replyService(out *shoalv1.Service, view shoalv1.ServiceView) *shoalv1.Service {
	if view == shoalv1.ServiceView_SERVICE_VIEW_BRIEF {
		out.Spec, out.PreviousSpec = nil, nil
	}
	return out
}
