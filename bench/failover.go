package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/shoal-dev/shoal/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// sampleSet is a series of timed events (failovers, node-down detections).
type sampleSet struct {
	Name    string
	What    string
	Samples []time.Duration
	Notes   []string
}

func (s *sampleSet) p99() time.Duration {
	sorted := slices.Clone(s.Samples)
	slices.Sort(sorted)
	return percentile(sorted, 99)
}

func (s *sampleSet) p50() time.Duration {
	sorted := slices.Clone(s.Samples)
	slices.Sort(sorted)
	return percentile(sorted, 50)
}

func (s *sampleSet) max() time.Duration {
	if len(s.Samples) == 0 {
		return 0
	}
	return slices.Max(s.Samples)
}

const (
	failoverTimeout = 60 * time.Second // from kill -9 to the first write
	rejoinTimeout   = 90 * time.Second // from restart to healthy again
)

// benchFailover kills the leader of a 3-manager cluster n times and times
// the first successful write after each kill, and, separately, the moment a
// surviving manager first names a new leader (the server-side part of the
// failover, without the client's retry backoff).
func benchFailover(ctx context.Context, e *env, n int) ([]*sampleSet, error) {
	res := &sampleSet{Name: "failover", What: "kill -9 of the leader (3 managers) → first successful GetService+UpdateService through a client with all three hosts"}
	elected := &sampleSet{Name: "failover-election", What: "kill -9 of the leader (3 managers) → a surviving manager first answers GetCluster with a new leader (each survivor polled every 10 ms)"}
	sets := []*sampleSet{res, elected}
	c, err := startShoal(ctx, e, "failover", 3, e.o.shoalIPs, "")
	if err != nil {
		return sets, err
	}
	defer c.stop()
	all, err := c.dial(ctx, c.managerAddrs()...)
	if err != nil {
		return sets, err
	}
	defer all.Close()

	var svcID string
	err = c.poll(ctx, 30*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
		resp, err := all.Control.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: benchServiceSpec("bench-failover", benchValue(0, 0))})
		if err != nil {
			return err
		}
		svcID = resp.GetService().GetMeta().GetId()
		return nil
	})
	if err != nil {
		return sets, fmt.Errorf("creating the service: %w", err)
	}

	seq := uint64(0)
	for i := 1; i <= n; i++ {
		var leader *shoalNode
		var leaderID string
		err := c.poll(ctx, 30*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
			l, resp, err := c.leader(ctx)
			if err != nil {
				return err
			}
			if v := voters(resp); v != 3 {
				return fmt.Errorf("%d voters", v)
			}
			leader, leaderID = l, resp.GetLeaderId()
			return nil
		})
		if err != nil {
			return sets, err
		}

		e.logf("failover %d/%d: kill -9 of the leader %s (%s)", i, n, leader.name, leader.addr)
		wctx, stopWatch := context.WithCancel(ctx)
		electedCh := c.watchElection(wctx, leader, leaderID)
		killed := time.Now()
		if err := c.killNode(leader); err != nil {
			stopWatch()
			return sets, err
		}
		attempts, errs, err := firstWrite(ctx, c, all, svcID, &seq, killed)
		if err != nil {
			stopWatch()
			return sets, fmt.Errorf("after killing the leader %s: %w", leader.addr, err)
		}
		d := time.Since(killed)
		res.Samples = append(res.Samples, d)
		var el time.Time
		select {
		case el = <-electedCh:
		case <-time.After(5 * time.Second):
		}
		stopWatch()
		if el.IsZero() {
			elected.Notes = append(elected.Notes, fmt.Sprintf("run %d: no survivor named a new leader within 5 s of the first write", i))
			e.logf("failover %d/%d: first write after %v (%d attempts); new leader not seen", i, n, d.Round(time.Millisecond), attempts)
		} else {
			elected.Samples = append(elected.Samples, el.Sub(killed))
			e.logf("failover %d/%d: new leader seen after %v, first write after %v (%d attempts)", i, n,
				el.Sub(killed).Round(time.Millisecond), d.Round(time.Millisecond), attempts)
		}
		if len(errs) > 0 {
			res.Notes = append(res.Notes, fmt.Sprintf("run %d: %d failed attempts before success, e.g. %s", i, attempts-1, errs[0]))
		}

		restarted := time.Now()
		if err := c.restart(leader); err != nil {
			return sets, err
		}
		if err := c.waitRejoined(ctx, leader); err != nil {
			return sets, err
		}
		e.logf("failover %d/%d: %s rejoined and healthy %v after its restart", i, n, leader.name, time.Since(restarted).Round(time.Millisecond))
	}
	return sets, nil
}

// firstWrite retries freshWrite until it succeeds, and returns the number
// of attempts and the first few errors.
func firstWrite(ctx context.Context, c *shoalCluster, cl *client.Client, svcID string, seq *uint64, killed time.Time) (int, []string, error) {
	attempts := 0
	var errs []string
	for {
		attempts++
		*seq++
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := freshWrite(actx, cl, svcID, benchValue(0, *seq))
		cancel()
		if err == nil {
			return attempts, errs, nil
		}
		if ctx.Err() != nil {
			return attempts, errs, ctx.Err()
		}
		if len(errs) < 5 {
			errs = append(errs, fmt.Sprintf("+%v: %v", time.Since(killed).Round(time.Millisecond), err))
		}
		if time.Since(killed) > failoverTimeout {
			return attempts, errs, fmt.Errorf("no successful write within %v; errors: %v", failoverTimeout, errs)
		}
		if err := c.checkAlive(); err != nil {
			return attempts, errs, err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// freshWrite reads the service and updates it with the version it read.
func freshWrite(ctx context.Context, cl *client.Client, id, value string) error {
	g, err := cl.Control.GetService(ctx, &shoalv1.GetServiceRequest{Ref: id})
	if err != nil {
		return fmt.Errorf("GetService: %w", err)
	}
	svc := g.GetService()
	spec := svc.GetSpec()
	if spec.Labels == nil {
		spec.Labels = map[string]string{}
	}
	spec.Labels["bench"] = value
	_, err = cl.Control.UpdateService(ctx, &shoalv1.UpdateServiceRequest{
		ServiceId: id, Version: svc.GetMeta().GetVersion(), Spec: spec, View: shoalv1.ServiceView_SERVICE_VIEW_BRIEF,
	})
	if err != nil {
		return fmt.Errorf("UpdateService: %w", err)
	}
	return nil
}

// waitRejoined waits until a restarted manager is a voter again, the
// cluster has a leader, every node is READY and reachable, and the
// restarted manager itself answers GetCluster with a leader.
func (c *shoalCluster) waitRejoined(ctx context.Context, n *shoalNode) error {
	err := c.poll(ctx, rejoinTimeout, 100*time.Millisecond, func(ctx context.Context) error {
		resp, err := c.getCluster(ctx, n.addr)
		if err != nil {
			return fmt.Errorf("%s: %w", n.addr, err)
		}
		if resp.GetLeaderId() == "" {
			return fmt.Errorf("%s knows no leader", n.addr)
		}
		found := false
		for _, m := range resp.GetMembers() {
			if sameHost(m.GetAddr(), n.addr) {
				found = true
				if !strings.EqualFold(m.GetSuffrage(), "voter") {
					return fmt.Errorf("%s is %s", n.addr, m.GetSuffrage())
				}
			}
		}
		if !found {
			return fmt.Errorf("%s is not a raft member", n.addr)
		}
		if v := voters(resp); v != len(c.managers()) {
			return fmt.Errorf("%d voters", v)
		}
		return c.nodesReady(ctx)
	})
	if err != nil {
		return fmt.Errorf("waiting for %s to rejoin: %w", n.addr, err)
	}
	return nil
}

// watchElection polls every surviving manager (one connection each, without
// the client package's retry of UNAVAILABLE, so that the poll period is the
// resolution) every 10 ms and sends the time at which one of them first
// names a leader other than oldID. The channel is buffered; nothing is sent
// if ctx ends first.
func (c *shoalCluster) watchElection(ctx context.Context, old *shoalNode, oldID string) <-chan time.Time {
	out := make(chan time.Time, 1)
	var conns []*grpc.ClientConn
	for _, m := range c.managers() {
		if m == old {
			continue
		}
		conn, err := c.rawConn(m.addr)
		if err != nil {
			c.e.logf("watching the election through %s: %v", m.addr, err)
			continue
		}
		conns = append(conns, conn)
	}
	go func() {
		defer func() {
			for _, conn := range conns {
				conn.Close()
			}
		}()
		found := make(chan time.Time, len(conns))
		pctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for _, conn := range conns {
			ctl := shoalv1.NewControlClient(conn)
			go func() {
				for pctx.Err() == nil {
					cctx, ccancel := context.WithTimeout(pctx, 100*time.Millisecond)
					resp, err := ctl.GetCluster(cctx, &shoalv1.GetClusterRequest{})
					ccancel()
					if err == nil && resp.GetLeaderId() != "" && resp.GetLeaderId() != oldID {
						found <- time.Now()
						return
					}
					select {
					case <-pctx.Done():
					case <-time.After(10 * time.Millisecond):
					}
				}
			}()
		}
		select {
		case t := <-found:
			out <- t
		case <-ctx.Done():
		}
	}()
	return out
}

// rawConn is an admin connection to one manager with no retry interceptor.
func (c *shoalCluster) rawConn(addr string) (*grpc.ClientConn, error) {
	creds, err := client.Credentials(client.Config{CertDir: c.adminDir})
	if err != nil {
		return nil, err
	}
	conf, err := trust.ClientTLSConfigFromCreds(creds, trust.ManagerServerName)
	if err != nil {
		return nil, err
	}
	return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
}
