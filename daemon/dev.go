package daemon

import (
	"context"
	"fmt"
	"os"
)

// Dev runs a one-node cluster (manager and agent) for trying shoal out: in
// o.DataDir, or a fresh temporary directory, advertising 127.0.0.1 unless
// told otherwise. It restarts an existing dev data dir as it was.
func Dev(ctx context.Context, o Options) error {
	if o.DataDir == "" {
		dir, err := os.MkdirTemp("", "shoal-dev-")
		if err != nil {
			return err
		}
		o.DataDir = dir
	}
	if o.AdvertiseAddr == "" {
		o.AdvertiseAddr = "127.0.0.1"
	}
	if o.Out != nil {
		fmt.Fprintf(o.Out, "shoal dev: data dir %s\n", o.DataDir)
	}
	if _, err := os.Stat(statePath(o.DataDir)); err == nil {
		return Run(ctx, o)
	}
	return Init(ctx, o)
}
