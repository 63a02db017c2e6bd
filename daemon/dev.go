package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/shoal-dev/shoal/agent/network"
	"github.com/shoal-dev/shoal/datadir"
)

// DemoImageFile is the demo image archive `shoal dev` loads when it lies
// beside the shoal binary (it holds the image demo:latest).
const DemoImageFile = "demo.oci.tar"

// devHint is what `shoal dev` prints once the node is up: %[1]s the data
// dir, %[2]s the shoal binary, %[3]s the gateway of the node's task bridge
// (a node address the host-mode port answers on; 127.0.0.1 does not: the
// kernel does not route loopback sources to the task bridge).
const devHint = `
shoal dev is running: one manager + agent, data dir %[1]s.
In another shell:
    export SHOAL_DATA_DIR=%[1]s
    %[2]s service create --name web --replicas 3 --no-resolve-image demo:latest
    %[2]s service ps web                # RUNNING, with each task's IP
    curl http://<task IP>:8080/          # the demo answers with its hostname, IPs and env
    %[2]s service logs -f web
    %[2]s service scale web=5
    %[2]s service rm web
Networks: bridge and host networks work here (overlay networks need a
non-loopback advertise address; their tasks are rejected):
    %[2]s network create --driver bridge --subnet 10.230.0.0/24 devnet
    %[2]s service create --name api --network devnet --replicas 2 --publish published=9090,target=8080,mode=host --no-resolve-image demo:latest
    %[2]s service create --name probe --network devnet --restart-condition none --no-resolve-image demo:latest fetch http://api:8080/
    %[2]s service logs probe          # api answered by name (its VIP): "Hostname: ..."
    curl http://%[3]s:9090/               # the host-mode port, on the node's addresses
(demo:latest was loaded on this node, it is in no registry: --no-resolve-image
skips the registry lookup that pins an image to its digest.)
Ctrl-C stops the node; its containers keep running until the next start.
`

// devHintText is devHint for the node's data dir, binary and task bridge
// subnet ("" for the default).
func devHintText(dataDir, exe, bridgeSubnet string) string {
	subnet := network.DefaultSubnet
	if p, err := netip.ParsePrefix(bridgeSubnet); err == nil {
		subnet = p.Masked()
	}
	return fmt.Sprintf(devHint, dataDir, exe, subnet.Addr().Next())
}

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
	o.dev = true
	if len(o.LoadImages) == 0 {
		// The demo image, when built beside the binary (make demo-image).
		if exe, err := os.Executable(); err == nil {
			p := filepath.Join(filepath.Dir(exe), DemoImageFile)
			if _, err := os.Stat(p); err == nil {
				o.LoadImages = []string{p}
			}
		}
	}
	if datadir.Exists(o.DataDir) {
		return Run(ctx, o)
	}
	return Init(ctx, o)
}
