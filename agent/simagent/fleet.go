package simagent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/shoal-dev/shoal/agent"
	"github.com/shoal-dev/shoal/trust"
)

// Fleet is a set of running simulated nodes.
type Fleet struct {
	Counters *Counters
	agents   []*agent.Agent
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// Start opens a session for every identity against managers, wave nodes
// at a time: a wave's sessions must all be open (each is a raft write on
// the leader) before the next wave dials, within waveTimeout. log gets
// the agents' own logs (nil: discarded; 5,000 agents are chatty).
func Start(ctx context.Context, ids *Identities, managers []string, counters *Counters, wave int, waveTimeout time.Duration, log *slog.Logger) (*Fleet, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if wave < 1 {
		wave = len(ids.Nodes)
	}
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f := &Fleet{Counters: counters, cancel: cancel}
	ok := false
	defer func() {
		if !ok {
			f.Stop()
		}
	}()
	for lo := 0; lo < len(ids.Nodes); lo += wave {
		hi := min(lo+wave, len(ids.Nodes))
		for _, id := range ids.Nodes[lo:hi] {
			conf, err := trust.ClientTLSConfigFromCreds(&trust.Creds{CACertPEM: ids.CACertPEM, CertPEM: id.CertPEM, KeyPEM: id.KeyPEM}, trust.ManagerServerName)
			if err != nil {
				return nil, fmt.Errorf("simulated node %s: %w", id.Name, err)
			}
			a := agent.New(agent.Config{
				NodeID: id.NodeID, Addr: "127.0.0.1:1", Managers: managers, Creds: credentials.NewTLS(conf),
				Description: Description(id.Name), Executor: NewExecutor(counters), Logger: log.With("sim_node", id.Name),
			})
			f.agents = append(f.agents, a)
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				if err := a.Run(fctx); err != nil {
					log.Error("simulated node stopped", "node_id", id.NodeID, "err", err)
				}
			}()
		}
		if err := f.waitConnected(ctx, hi, waveTimeout); err != nil {
			return nil, err
		}
	}
	ok = true
	return f, nil
}

// waitConnected polls until n sessions are open.
func (f *Fleet) waitConnected(ctx context.Context, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c := f.Connected()
		if c >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d simulated nodes have a session after %v", c, n, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond): // poll interval
		}
	}
}

// Connected is the number of simulated nodes with an open session.
func (f *Fleet) Connected() int {
	n := 0
	for _, a := range f.agents {
		if a.Connected() {
			n++
		}
	}
	return n
}

// Size is the number of simulated nodes.
func (f *Fleet) Size() int { return len(f.agents) }

// Stop ends every session (each agent says goodbye, as a node restarting
// on purpose does, so the managers keep the nodes for their restart grace)
// and waits for the agents to return.
func (f *Fleet) Stop() {
	f.cancel()
	f.wg.Wait()
}
