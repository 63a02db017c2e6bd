package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/agent/image"
)

// resolveTimeout bounds the registry lookup of `service create/update`:
// an unreachable registry must not hold the command up for long.
const resolveTimeout = 3 * time.Second

// pinImage returns ref pinned to the digest the registry serves for it now
// (name:tag@sha256:...), so that every replica runs the same bytes even if
// the tag moves. When the registry cannot be asked (air-gapped node,
// image only loaded locally), ref is returned unchanged with a warning.
// The lookup may use plain http: the digest pins the content, and agents
// verify every blob they pull against it.
func (a *app) pinImage(ctx context.Context, ref string) string {
	if strings.Contains(ref, "@") {
		return ref // already pinned
	}
	rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	d, err := image.Resolve(rctx, ref, image.PullOptions{Insecure: true})
	if err != nil {
		fmt.Fprintf(a.errOut, "warning: image %s could not be pinned to a digest (%v); tasks may run different versions if the tag moves\n", ref, shortErr(err))
		return ref
	}
	return ref + "@" + d
}

func shortErr(err error) string {
	s := err.Error()
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}
