package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-dev/shoal/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// valueLen is the size of the value each write changes: a service label
// value on shoal, the key's value on etcd.
const valueLen = 100

// benchValue is worker w's seq-th value, exactly valueLen bytes.
func benchValue(w int, seq uint64) string {
	b := make([]byte, 0, valueLen)
	b = append(b, 'w')
	b = strconv.AppendInt(b, int64(w), 10)
	b = append(b, '-')
	s := strconv.FormatUint(seq, 10)
	for len(b)+len(s) < valueLen {
		b = append(b, '0')
	}
	b = append(b, s...)
	return string(b[:valueLen])
}

// shoalWorker is one writer's state; only that writer's goroutine touches
// it. The padding keeps two writers' counters off one cache line.
type shoalWorker struct {
	req   *shoalv1.UpdateServiceRequest
	patch *shoalv1.PatchServiceRequest // -write patch
	seq   uint64
	_     [40]byte
}

// benchUpdateRequest is a writer's request for the service created for
// it, asking for the brief reply: the writer keeps the spec it sends and
// reads only the new version back (a manager that predates the view sends
// the whole service, which reads the same).
func benchUpdateRequest(svc *shoalv1.Service) *shoalv1.UpdateServiceRequest {
	req := &shoalv1.UpdateServiceRequest{
		ServiceId: svc.GetMeta().GetId(), Version: svc.GetMeta().GetVersion(), Spec: svc.GetSpec(),
		View: shoalv1.ServiceView_SERVICE_VIEW_BRIEF,
	}
	if req.Spec.Labels == nil {
		req.Spec.Labels = map[string]string{}
	}
	return req
}

// benchPatchRequest is a writer's PatchService for the service created
// for it: its label alone, the version read named, the brief reply.
func benchPatchRequest(svc *shoalv1.Service) *shoalv1.PatchServiceRequest {
	return &shoalv1.PatchServiceRequest{
		ServiceId: svc.GetMeta().GetId(), Version: svc.GetMeta().GetVersion(),
		LabelsAdd: map[string]string{"bench": svc.GetSpec().GetLabels()["bench"]},
		View:      shoalv1.ServiceView_SERVICE_VIEW_BRIEF,
	}
}

// shoalWriteName names -write's RPC for the report.
func shoalWriteName(write string) string {
	if write == "update" {
		return "UpdateService (the whole spec)"
	}
	return "PatchService (labels_add of the one label)"
}

// benchServiceSpec is the spec of a benchmark service: 0 replicas, so that
// updates change no task.
func benchServiceSpec(name, value string) *shoalv1.ServiceSpec {
	return &shoalv1.ServiceSpec{
		Name:     name,
		Labels:   map[string]string{"bench": value},
		Mode:     shoalv1.ServiceMode_SERVICE_MODE_REPLICATED,
		Replicas: 0,
		Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{
			Image: "shoal-bench:none", Command: []string{"/bin/true"},
		}},
	}
}

// benchShoal measures PatchService (or, -write update, UpdateService) throughput on a cluster of the given
// number of managers, one cell per concurrency, with -agents simulated
// agents connected.
func benchShoal(ctx context.Context, e *env, managers int, rep *report) ([]cellResult, error) {
	label := fmt.Sprintf("shoal-%dm", managers)
	c, err := startShoal(ctx, e, label, managers, e.o.shoalIPs, "")
	if err != nil {
		return nil, err
	}
	defer c.stop()

	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	leader, _, err := c.leader(lctx)
	cancel()
	if err != nil {
		return nil, err
	}
	e.logf("%s: leader is %s (%s); clients connect to it directly", label, leader.name, leader.addr)
	cl, err := c.dial(ctx, leader.addr)
	if err != nil {
		return nil, err
	}
	defer cl.Close()

	if e.o.agents > 0 {
		stopAgents, set, err := startAgents(ctx, e, c, leader, cl, label)
		if err != nil {
			return nil, fmt.Errorf("-agents %d: %w", e.o.agents, err)
		}
		defer stopAgents()
		rep.Meta.AgentsIdleCPUms, rep.Meta.AgentsLeaderIdleCPUms = msf(set.idleCPU), msf(set.leaderIdleCPU)
	}

	maxC := slices.Max(e.o.concs)
	workers := make([]shoalWorker, maxC)
	e.logf("%s: creating %d services (0 replicas)", label, maxC)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for w := range workers {
		g.Go(func() error {
			cctx, cancel := context.WithTimeout(gctx, 30*time.Second)
			defer cancel()
			resp, err := cl.Control.CreateService(cctx, &shoalv1.CreateServiceRequest{
				Spec: benchServiceSpec(fmt.Sprintf("bench-%04d", w), benchValue(w, 0)),
			})
			if err != nil {
				return fmt.Errorf("creating service bench-%04d: %w", w, err)
			}
			workers[w].req = benchUpdateRequest(resp.GetService())
			workers[w].patch = benchPatchRequest(resp.GetService())
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	// On an error the version is re-read so that the worker can go on (the
	// failed call may have committed).
	refresh := func(w int) {
		rctx, cancel := context.WithTimeout(ctx, e.o.callTimeout)
		defer cancel()
		if resp, err := cl.Control.GetService(rctx, &shoalv1.GetServiceRequest{Ref: workers[w].req.GetServiceId()}); err == nil {
			workers[w].req.Version = resp.GetService().GetMeta().GetVersion()
			workers[w].patch.Version = workers[w].req.Version
		}
	}
	update := func(ctx context.Context, w int) error {
		wk := &workers[w]
		wk.seq++
		wk.req.Spec.Labels["bench"] = benchValue(w, wk.seq)
		resp, err := cl.Control.UpdateService(ctx, wk.req)
		if err != nil {
			refresh(w)
			return err
		}
		wk.req.Version = resp.GetService().GetMeta().GetVersion()
		return nil
	}
	patch := func(ctx context.Context, w int) error {
		wk := &workers[w]
		wk.seq++
		wk.patch.LabelsAdd["bench"] = benchValue(w, wk.seq)
		resp, err := cl.Control.PatchService(ctx, wk.patch)
		if err != nil {
			refresh(w)
			return err
		}
		wk.patch.Version = resp.GetService().GetMeta().GetVersion()
		return nil
	}
	op, rpc := patch, "PatchService"
	if e.o.write == "update" {
		op, rpc = update, "UpdateService"
	} else if err := op(ctx, 0); client.IsUnimplemented(err) {
		return nil, fmt.Errorf("-write patch: this shoal has no PatchService (an earlier build): measure it with -write update")
	} else if err != nil {
		return nil, fmt.Errorf("a first PatchService: %w", err)
	}

	var cells []cellResult
	for _, conc := range e.o.concs {
		if err := c.checkAlive(); err != nil {
			return cells, err
		}
		e.logf("%s: %s, concurrency %d, %v warm-up + %v", label, rpc, conc, e.o.warmup, e.o.duration)
		var prof errgroup.Group
		if e.o.pprofDir != "" {
			var targets []profileTarget
			for _, n := range c.managers() {
				role := "follower"
				if n == leader {
					role = "leader"
				}
				targets = append(targets, profileTarget{name: n.name, ip: n.ip, role: role})
			}
			from := time.Now().Add(e.o.warmup)
			prof.Go(func() error {
				return profileCell(ctx, e.o.pprofDir, label, conc, targets, debugPort, from, e.o.duration)
			})
			prof.Go(func() error {
				return profileSelf(ctx, selfProfilePath(e.o.pprofDir, label, conc), from, e.o.duration)
			})
		}
		var ps []*proc
		var names []string
		for _, n := range c.managers() {
			ps = append(ps, n.proc)
			names = append(names, memberName(n.name, n == leader))
		}
		res, err := runClosedLoop(ctx, conc, e.o.warmup, e.o.duration, e.o.callTimeout, op, func() []time.Duration {
			return procsCPUEach(ps...)
		})
		res.System, res.Members, res.MemberNames = "shoal", managers, names
		if perr := prof.Wait(); perr != nil && err == nil {
			err = perr
		}
		if err != nil {
			return cells, fmt.Errorf("concurrency %d: %w", conc, err)
		}
		cells = append(cells, res)
		e.logf("%s: concurrency %d: %.0f ops/s, p50 %s, p99 %s, %d errors, cluster CPU %s/op, client CPU %s/op", label, conc, res.OpsPerSec, ms(res.P50), ms(res.P99), res.Errors, us(res.cpuPerOp()), us(res.clientCPUPerOp()))
		if res.FirstError != "" {
			e.logf("%s: first error: %s", label, res.FirstError)
		}
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		now, _, err := c.leader(lctx)
		cancel()
		if err != nil {
			return cells, err
		}
		if now != leader {
			e.logf("%s: WARNING: the leader moved from %s to %s during the cell", label, leader.addr, now.addr)
			return cells, fmt.Errorf("leader changed from %s to %s under load (see the logs)", leader.addr, now.addr)
		}
	}
	return cells, nil
}

// etcdWorker is one etcd writer's state.
type etcdWorker struct {
	key string
	seq uint64
	_   [48]byte
}

// benchEtcd measures Put throughput on a 3-member etcd cluster.
func benchEtcd(ctx context.Context, e *env) ([]cellResult, error) {
	ec, err := startEtcd(ctx, e)
	if err != nil {
		return nil, err
	}
	defer ec.stop()
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	leader, err := ec.leader(lctx)
	cancel()
	if err != nil {
		return nil, err
	}
	e.logf("etcd: leader is %s; clients connect to it directly", leader.clientURL)
	cli, err := clientv3.New(ec.clientConfig(ctx, leader.clientURL))
	if err != nil {
		return nil, err
	}
	defer cli.Close()

	maxC := slices.Max(e.o.concs)
	workers := make([]etcdWorker, maxC)
	for w := range workers {
		workers[w].key = fmt.Sprintf("/bench/w%04d", w)
	}
	op := func(ctx context.Context, w int) error {
		wk := &workers[w]
		wk.seq++
		_, err := cli.Put(ctx, wk.key, benchValue(w, wk.seq))
		return err
	}
	var cells []cellResult
	for _, conc := range e.o.concs {
		if err := ec.checkAlive(); err != nil {
			return cells, err
		}
		e.logf("etcd: Put, concurrency %d, %v warm-up + %v", conc, e.o.warmup, e.o.duration)
		var prof errgroup.Group
		if e.o.pprofDir != "" {
			from := time.Now().Add(e.o.warmup)
			prof.Go(func() error {
				return profileSelf(ctx, selfProfilePath(e.o.pprofDir, "etcd", conc), from, e.o.duration)
			})
			if ec.tls == nil {
				var targets []profileTarget
				for _, m := range ec.members {
					role := "follower"
					if m == leader {
						role = "leader"
					}
					targets = append(targets, profileTarget{name: m.name, ip: m.ip, role: role})
				}
				prof.Go(func() error {
					return profileCell(ctx, e.o.pprofDir, "etcd", conc, targets, etcdClientPort, from, e.o.duration)
				})
			}
		}
		var ps []*proc
		var names []string
		for _, m := range ec.members {
			ps = append(ps, m.proc)
			names = append(names, memberName(m.name, m == leader))
		}
		res, err := runClosedLoop(ctx, conc, e.o.warmup, e.o.duration, e.o.callTimeout, op, func() []time.Duration {
			return procsCPUEach(ps...)
		})
		res.System, res.Members, res.MemberNames = "etcd", len(ec.members), names
		if perr := prof.Wait(); perr != nil && err == nil {
			err = perr
		}
		if err != nil {
			return cells, fmt.Errorf("concurrency %d: %w", conc, err)
		}
		cells = append(cells, res)
		e.logf("etcd: concurrency %d: %.0f ops/s, p50 %s, p99 %s, %d errors, cluster CPU %s/op, client CPU %s/op", conc, res.OpsPerSec, ms(res.P50), ms(res.P99), res.Errors, us(res.cpuPerOp()), us(res.clientCPUPerOp()))
		if res.FirstError != "" {
			e.logf("etcd: first error: %s", res.FirstError)
		}
	}
	return cells, nil
}

// etcdClientPort is the etcd members' client port, where -pprof finds
// their profiles (--enable-pprof).
const etcdClientPort = "2379"

// memberName names a cluster process in the per-process CPU figures.
func memberName(name string, leader bool) string {
	if leader {
		return name + " (leader)"
	}
	return name
}

// us formats a duration in microseconds.
func us(d time.Duration) string {
	return strconv.FormatInt(d.Microseconds(), 10) + "µs"
}

// ms formats a duration in milliseconds with two decimals.
func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + "ms"
}
