package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/client"
	"github.com/shoal-dev/shoal/datadir"
	"github.com/shoal-dev/shoal/logstream"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// imageChunk is the size of one LoadImage message: well under gRPC's 4 MB
// message limit, large enough that per-message costs do not matter.
const imageChunk = 1 << 20

func (a *app) imageCmd() *cobra.Command {
	c := &cobra.Command{Use: "image", Short: "Manage the images of a node (its agent's image store)"}
	c.AddCommand(a.imageLoad(), a.imageLs(), a.imageRm())
	return c
}

// nodeFlag is --node: which node's agent to talk to.
func nodeFlag(c *cobra.Command, node *string) {
	c.Flags().StringVar(node, "node", "", "node (name, id or id prefix; default: the node of --data-dir)")
}

// agentTarget is a node's agent API as the CLI reaches it.
type agentTarget struct {
	nodeID, name, addr string
}

// findAgent resolves --node through the control API, or without it takes
// the node whose data dir --data-dir is.
func (a *app) findAgent(ctx context.Context, node string) (agentTarget, error) {
	if node == "" {
		st, err := readLocalNode(a.dataDir)
		if err != nil {
			return agentTarget{}, fmt.Errorf("--node: required unless --data-dir holds a node (%v)", err)
		}
		if st.AgentAddr != "" {
			return agentTarget{nodeID: st.NodeID, name: st.NodeID, addr: st.AgentAddr}, nil
		}
		node = st.NodeID // a node.json from before agent addresses: ask the managers
	}
	cl, err := a.dial(ctx)
	if err != nil {
		return agentTarget{}, err
	}
	defer cl.Close()
	cctx, cancel := a.call(ctx)
	defer cancel()
	resp, err := cl.Control.GetNode(cctx, &shoalv1.GetNodeRequest{Ref: node})
	if err != nil {
		return agentTarget{}, err
	}
	n := resp.GetNode()
	t := agentTarget{nodeID: n.GetMeta().GetId(), name: nodeName(n), addr: n.GetStatus().GetAgentAddr()}
	if t.name == "" {
		t.name = t.nodeID
	}
	if t.addr == "" {
		return agentTarget{}, fmt.Errorf("node %q has not reported an agent API address (is it up, and running this version?)", t.name)
	}
	return t, nil
}

// readLocalNode reads the node.json of --data-dir, which must name a node.
func readLocalNode(dataDir string) (*datadir.Node, error) {
	st, err := datadir.Load(dataDir)
	if err != nil {
		return nil, err
	}
	if st.NodeID == "" {
		return nil, fmt.Errorf("%s names no node", datadir.Dir(dataDir).NodeFile())
	}
	return st, nil
}

// withAgent connects to a node's agent API with the admin credentials
// (or a manager's own, on a manager's data dir) and runs f.
func (a *app) withAgent(cmd *cobra.Command, node string, f func(ag shoalv1.AgentAPIClient, t agentTarget) error) error {
	t, err := a.findAgent(cmd.Context(), node)
	if err != nil {
		return err
	}
	creds, err := client.Credentials(client.Config{CertDir: a.certDir, DataDir: a.dataDir})
	if err != nil {
		return err
	}
	// The server name is checked by logstream.ClientTLSConfig instead: the
	// certificate must be the node's (see there).
	base, err := trust.ClientTLSConfigFromCreds(creds, trust.ManagerServerName)
	if err != nil {
		return err
	}
	conn, err := logstream.Dial(t.addr, t.nodeID, base)
	if err != nil {
		return err
	}
	defer conn.Close()
	return agentError(t, f(shoalv1.NewAgentAPIClient(conn), t))
}

// agentError names the node in errors that come from reaching it.
func agentError(t agentTarget, err error) error {
	if err == nil {
		return nil
	}
	msg := errorMessage(err)
	if strings.HasPrefix(msg, "unavailable") || strings.HasPrefix(msg, "timed out") {
		return fmt.Errorf("node %q (agent API at %s): %s", t.name, t.addr, msg)
	}
	return errors.New(msg)
}

func (a *app) imageLoad() *cobra.Command {
	var node string
	cmd := &cobra.Command{Use: "load [--node NODE] FILE", Short: "Load images from an archive (OCI layout archive or docker save, optionally gzipped) into a node", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			if fi, err := f.Stat(); err == nil && fi.IsDir() {
				return fmt.Errorf("%s is a directory; load takes an archive (tar it, or use `shoal daemon --load-image`)", args[0])
			}
			return a.withAgent(cmd, node, func(ag shoalv1.AgentAPIClient, t agentTarget) error {
				// A cheap call first: an unreachable node or a refusal shows
				// before any of the archive is sent.
				pctx, cancel := a.call(cmd.Context())
				_, err := ag.ListImages(pctx, &shoalv1.ListImagesRequest{})
				cancel()
				if err != nil {
					return err
				}
				resp, err := uploadImage(cmd.Context(), ag, f)
				if err != nil {
					return err
				}
				for _, img := range resp.GetImages() {
					if len(img.GetRefs()) == 0 {
						fmt.Fprintf(a.out, "Loaded image: %s\n", img.GetDigest())
					}
					for _, r := range img.GetRefs() {
						fmt.Fprintf(a.out, "Loaded image: %s\n", displayRef(r))
					}
				}
				return nil
			})
		}}
	nodeFlag(cmd, &node)
	return cmd
}

// uploadImage streams r to LoadImage. The upload has no deadline (an
// archive can be large); the caller interrupts it if need be.
func uploadImage(ctx context.Context, ag shoalv1.AgentAPIClient, r io.Reader) (*shoalv1.LoadImageResponse, error) {
	st, err := ag.LoadImage(ctx)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, imageChunk)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if err := st.Send(&shoalv1.LoadImageChunk{Data: buf[:n]}); err != nil {
				// The server ended the call (a refusal, a limit):
				// CloseAndRecv returns its status.
				break
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("reading the archive: %w", rerr)
		}
	}
	return st.CloseAndRecv()
}

func (a *app) imageLs() *cobra.Command {
	var node string
	var lf listFlags
	cmd := &cobra.Command{Use: "ls [--node NODE]", Short: "List a node's images", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := lf.check(); err != nil {
				return err
			}
			if len(lf.filters) > 0 {
				return errors.New("--filter: image ls has no filters")
			}
			return a.withAgent(cmd, node, func(ag shoalv1.AgentAPIClient, _ agentTarget) error {
				ctx, cancel := a.call(cmd.Context())
				defer cancel()
				resp, err := ag.ListImages(ctx, &shoalv1.ListImagesRequest{})
				if err != nil {
					return err
				}
				return printImages(a.out, resp.GetImages(), lf, time.Now())
			})
		}}
	nodeFlag(cmd, &node)
	lf.bind(cmd, true)
	return cmd
}

func printImages(w io.Writer, imgs []*shoalv1.ImageSummary, lf listFlags, now time.Time) error {
	switch {
	case lf.quiet:
		for _, img := range imgs {
			fmt.Fprintln(w, img.GetDigest())
		}
		return nil
	case lf.format == "json":
		return printJSON(w, imgs)
	}
	tw := table(w)
	fmt.Fprintln(tw, "REFERENCE\tDIGEST\tCREATED\tSIZE\tLAST USED")
	for _, img := range imgs {
		refs := img.GetRefs()
		if len(refs) == 0 {
			refs = []string{"<none>"}
		}
		// One row per reference, as docker lists one per tag.
		for _, r := range refs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", displayRef(r), shortDigest(img.GetDigest()), ago(img.GetCreated(), now),
				humanSize(img.GetSize()), ago(img.GetLastUsed(), now))
		}
	}
	return tw.Flush()
}

func (a *app) imageRm() *cobra.Command {
	var node string
	var force bool
	cmd := &cobra.Command{Use: "rm [--node NODE] [--force] REF...", Aliases: []string{"remove"},
		Short: "Remove image references from a node (the data goes once no task uses it)", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withAgent(cmd, node, func(ag shoalv1.AgentAPIClient, _ agentTarget) error {
				if !force {
					if err := a.checkImagesUnused(cmd.Context(), ag, args); err != nil {
						return err
					}
				}
				for _, ref := range args {
					ctx, cancel := a.call(cmd.Context())
					_, err := ag.RemoveImage(ctx, &shoalv1.RemoveImageRequest{Ref: ref})
					cancel()
					if err != nil {
						return err
					}
					fmt.Fprintf(a.out, "Untagged: %s\n", ref)
				}
				return nil
			})
		}}
	nodeFlag(cmd, &node)
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove even if services use the image (their next task on the node must pull it)")
	return cmd
}

// checkImagesUnused refuses to remove refs that services use: without the
// reference (or, once dangling, the data) the node cannot start their next
// task from it, which ends REJECTED when no registry has the image.
func (a *app) checkImagesUnused(ctx context.Context, ag shoalv1.AgentAPIClient, refs []string) error {
	cctx, cancel := a.call(ctx)
	defer cancel()
	imgs, err := ag.ListImages(cctx, &shoalv1.ListImagesRequest{})
	if err != nil {
		return err
	}
	cl, err := a.dial(ctx)
	if err != nil {
		return fmt.Errorf("asking the managers which services use the image (--force skips this): %w", err)
	}
	defer cl.Close()
	svcs, err := client.ListServices(cctx, cl.Control, &shoalv1.ListServicesRequest{})
	if err != nil {
		return fmt.Errorf("asking the managers which services use the image (--force skips this): %w", err)
	}
	for _, ref := range refs {
		users, maybeID := imageUsers(ref, imgs.GetImages(), svcs.GetServices())
		switch {
		case len(users) > 0 && maybeID:
			return fmt.Errorf("%s may be the id of an image that service %s uses (the node matches image ids too, which this check cannot see): name the image by reference or digest (shoal image ls), or use --force",
				ref, strings.Join(users, ", "))
		case len(users) > 0:
			return fmt.Errorf("image %s is used by service %s: their tasks could not start from it on this node; remove or update the service first, or use --force",
				ref, strings.Join(users, ", "))
		}
	}
	return nil
}

// imageUsers names the services whose image would no longer be found in
// the store of imgs once ref is removed (the store's rules, agent/image:
// by name:tag or name@digest only that reference goes, by digest or id
// prefix all of them; a service's reference is found by its full name,
// or by its digest while the image keeps a reference — an image left
// without any is garbage-collected). References are compared in their
// fully qualified form (demo:1 is index.docker.io/library/demo:1).
//
// The store also takes a prefix of an image's id (its config digest) for
// the image, and ListImages does not show ids: a digest-like ref that
// matches no digest and no name may be any image's id, so then the users
// of every image, as if it lost all its references, are returned with
// maybeID set.
func imageUsers(ref string, imgs []*shoalv1.ImageSummary, svcs []*shoalv1.Service) (users []string, maybeID bool) {
	target, all := findImageSummary(ref, imgs)
	if target == nil {
		if _, hex := digestPrefix(strings.TrimSpace(ref)); !hex {
			return nil, false // the agent says it is not there
		}
		for _, img := range imgs {
			users = append(users, usersOf(img, nil, svcs)...)
		}
		slices.Sort(users)
		return slices.Compact(users), true
	}
	var remaining []string
	if !all {
		r, err := name.ParseReference(ref)
		if err != nil {
			return nil, false
		}
		remaining = slices.DeleteFunc(slices.Clone(target.GetRefs()), func(x string) bool { return x == r.Name() })
	}
	return usersOf(target, remaining, svcs), false
}

// usersOf names the services whose image is found as target now but not
// once target is left with only the remaining references.
func usersOf(target *shoalv1.ImageSummary, remaining []string, svcs []*shoalv1.Service) []string {
	found := func(r name.Reference, refs []string) bool {
		if slices.Contains(refs, r.Name()) {
			return true
		}
		d, ok := r.(name.Digest)
		return ok && len(refs) > 0 && d.DigestStr() == target.GetDigest()
	}
	var users []string
	for _, s := range svcs {
		r, err := name.ParseReference(s.GetSpec().GetTask().GetContainer().GetImage())
		if err != nil {
			continue
		}
		if found(r, target.GetRefs()) && !found(r, remaining) {
			users = append(users, s.GetSpec().GetName())
		}
	}
	slices.Sort(users)
	return users
}

// findImageSummary finds the image ref names as the store does, and says
// whether removing it drops all of its references (ref is a digest or an
// id prefix that is not one of its names).
func findImageSummary(ref string, imgs []*shoalv1.ImageSummary) (*shoalv1.ImageSummary, bool) {
	ref = strings.TrimSpace(ref)
	r, perr := name.ParseReference(ref)
	if hex, ok := digestPrefix(ref); ok {
		var hits []*shoalv1.ImageSummary
		for _, img := range imgs {
			if strings.HasPrefix(strings.TrimPrefix(img.GetDigest(), "sha256:"), hex) {
				hits = append(hits, img)
			}
		}
		if len(hits) == 1 {
			return hits[0], perr != nil || !slices.Contains(hits[0].GetRefs(), r.Name())
		}
	}
	if perr != nil {
		return nil, false
	}
	for _, img := range imgs {
		if slices.Contains(img.GetRefs(), r.Name()) {
			return img, false
		}
	}
	if d, ok := r.(name.Digest); ok {
		for _, img := range imgs {
			if img.GetDigest() == d.DigestStr() {
				return img, false
			}
		}
	}
	return nil, false
}

// digestPrefix reports whether ref looks like a digest or a prefix of one
// (at least 4 hex digits) and returns its hex part.
func digestPrefix(ref string) (string, bool) {
	hex := strings.TrimPrefix(ref, "sha256:")
	if len(hex) < 4 || len(hex) > 64 {
		return "", false
	}
	for _, c := range hex {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", false
		}
	}
	return hex, true
}

// displayRef shortens a stored, fully qualified reference the way docker
// shows Docker Hub names: "index.docker.io/library/app:1" is "app:1".
func displayRef(r string) string {
	if s, ok := strings.CutPrefix(r, "index.docker.io/library/"); ok {
		return s
	}
	if s, ok := strings.CutPrefix(r, "index.docker.io/"); ok {
		return s
	}
	return r
}

// shortDigest is the first 12 hex digits of a sha256 digest.
func shortDigest(d string) string {
	return shortID(strings.TrimPrefix(d, "sha256:"))
}

// humanSize prints bytes in decimal units, as docker does (1 MB = 10^6 B).
func humanSize(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	f := float64(n)
	for _, u := range []string{"kB", "MB", "GB", "TB"} {
		f /= unit
		if f < unit {
			return fmt.Sprintf("%.3g%s", f, u)
		}
	}
	return fmt.Sprintf("%.3gPB", f/unit)
}
