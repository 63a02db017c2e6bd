package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"

	"github.com/shoal-dev/shoal/overlay/dns"
	"github.com/shoal-dev/shoal/overlay/vip"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Discovery is a node's service discovery: one dns.View for the node,
// and per task on overlay networks a DNS server in its namespace
// (dns.Serve at 127.0.0.11) and the VIPs of its networks programmed in
// its namespace (vip.Program). Update gives it the node's full set of
// network states after every change; it swaps the view and re-programs
// the VIPs of the tasks whose VIP set changed. Safe for concurrent use.
type Discovery struct {
	fwd dns.Forwarders
	log *slog.Logger

	view *dns.View

	mu     sync.Mutex
	states []*shoalv1.NetworkState
	tasks  map[string]*discTask // by task id
}

type discTask struct {
	netns    string
	networks []string
	srv      *dns.Server
	cancel   context.CancelFunc
	vips     string // key of the last programmed VIP set
}

// NewDiscovery returns a Discovery forwarding other names to fwd
// (zero: the node's /etc/resolv.conf nameservers). log may be nil.
func NewDiscovery(fwd dns.Forwarders, log *slog.Logger) *Discovery {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Discovery{fwd: fwd, log: log, view: dns.NewView(), tasks: map[string]*discTask{}}
}

// View is the node's name table (for tests and inspection).
func (d *Discovery) View() *dns.View { return d.view }

// Update replaces the node's network states (the full set) and brings
// every task's answers and VIPs up to date; the error says which tasks'
// VIPs could not be programmed (each is tried again by the next Update),
// not counting tasks whose namespace is gone (being released).
func (d *Discovery) Update(states []*shoalv1.NetworkState) error {
	d.view.Update(states)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.states = states
	var errs []error
	for id, t := range d.tasks {
		if err := d.programLocked(t); err != nil {
			d.log.Warn("programming the VIPs of a task", "task_id", id, "err", err)
			if !isNotExist(err) { // a namespace gone sends nothing anywhere
				errs = append(errs, fmt.Errorf("task %s: %w", id, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Start serves DNS in the task's namespace for its networks (ids) and
// programs their VIPs there. Starting a task again (re-adoption) replaces
// its server.
func (d *Discovery) Start(ctx context.Context, taskID, netnsPath string, networks []string) error {
	d.Stop(taskID)
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	srv, err := dns.Serve(sctx, netnsPath, networks, d.view, d.fwd)
	if err != nil {
		cancel()
		return err
	}
	t := &discTask{netns: netnsPath, networks: slices.Clone(networks), srv: srv, cancel: cancel}
	d.mu.Lock()
	defer d.mu.Unlock()
	if old := d.tasks[taskID]; old != nil { // a racing Start
		old.srv.Close()
		old.cancel()
	}
	d.tasks[taskID] = t
	if err := d.programLocked(t); err != nil {
		return fmt.Errorf("vips: %w", err)
	}
	return nil
}

// Stop stops the task's DNS server and drops its VIP rules (a missing
// namespace is fine). Unknown tasks are ignored.
func (d *Discovery) Stop(taskID string) error {
	d.mu.Lock()
	t := d.tasks[taskID]
	delete(d.tasks, taskID)
	d.mu.Unlock()
	if t == nil {
		return nil
	}
	t.srv.Close()
	t.cancel()
	if err := vip.Clear(t.netns); err != nil && !isNotExist(err) {
		return err
	}
	return nil
}

// Tasks returns the ids of the tasks being served.
func (d *Discovery) Tasks() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ids []string
	for id := range d.tasks {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// programLocked programs t's VIPs if they changed since the last time.
func (d *Discovery) programLocked(t *discTask) error {
	vips := VIPsFor(d.states, t.networks)
	key := vipKey(vips)
	if key == t.vips {
		return nil
	}
	if err := vip.Program(t.netns, vips); err != nil {
		t.vips = "" // try again next time
		return err
	}
	d.log.Debug("VIP rules programmed", "netns", t.netns, "vips", key)
	t.vips = key
	return nil
}

// VIPsFor returns the VIPs a task attached to networks must have: per
// service in vip mode with an address on one of those networks, its VIP
// with the addresses of the service's serving endpoints on that network
// (RUNNING and, where checked, healthy: dns.Serves) as backends.
func VIPsFor(states []*shoalv1.NetworkState, networks []string) []vip.VIP {
	var out []vip.VIP
	for _, st := range states {
		if !slices.Contains(networks, st.GetNetwork().GetMeta().GetId()) {
			continue
		}
		for _, vs := range st.GetVips() {
			if vs.GetEndpointMode() == "dnsrr" || vs.GetAddress() == "" {
				continue
			}
			addr := cidrIP(vs.GetAddress())
			if addr == nil {
				continue
			}
			v := vip.VIP{Addr: addr}
			for _, ep := range st.GetEndpoints() {
				if !dns.Serves(ep) {
					continue
				}
				if (vs.GetServiceId() != "" && ep.GetServiceId() == vs.GetServiceId()) ||
					(vs.GetServiceId() == "" && strings.EqualFold(ep.GetServiceName(), vs.GetServiceName())) {
					if ip := cidrIP(ep.GetAddress()); ip != nil {
						v.Backends = append(v.Backends, ip)
					}
				}
			}
			out = append(out, v)
		}
	}
	return out
}

func cidrIP(s string) net.IP {
	if ip, _, err := net.ParseCIDR(s); err == nil {
		return ip.To4()
	}
	if ip := net.ParseIP(s); ip != nil {
		return ip.To4()
	}
	return nil
}

func vipKey(vips []vip.VIP) string {
	parts := make([]string, 0, len(vips))
	for _, v := range vips {
		bs := make([]string, 0, len(v.Backends))
		for _, b := range v.Backends {
			bs = append(bs, b.String())
		}
		slices.Sort(bs)
		parts = append(parts, v.Addr.String()+"="+strings.Join(bs, ","))
	}
	slices.Sort(parts)
	return "v:" + strings.Join(parts, ";")
}
