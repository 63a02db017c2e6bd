package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdMember is one etcd process of the reference cluster.
type etcdMember struct {
	name      string
	ip        string
	clientURL string
	peerURL   string
	dataDir   string
	logPath   string
	proc      *proc
}

// etcdCluster is a 3-member etcd cluster on loopback addresses.
type etcdCluster struct {
	e       *env
	members []*etcdMember
	tls     *etcdTLS // nil: plain HTTP
}

// clientConfig is the client configuration for endpoints: TLS with the
// bench's client certificate when the cluster runs with -etcd-tls.
func (c *etcdCluster) clientConfig(ctx context.Context, endpoints ...string) clientv3.Config {
	cfg := clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), Context: ctx}
	if c.tls != nil {
		cfg.TLS = c.tls.client.Clone()
	}
	return cfg
}

func (c *etcdCluster) stop() {
	for _, m := range c.members {
		if err := c.e.sup.kill(m.proc); err != nil {
			c.e.logf("%v", err)
		}
	}
}

func (c *etcdCluster) checkAlive() error {
	for _, m := range c.members {
		if done, err := m.proc.exited(); done {
			return fmt.Errorf("etcd member %s (%s) exited: %v; last lines of %s:\n%s", m.name, m.ip, err, m.logPath, tail(m.logPath, 30))
		}
	}
	return nil
}

// startEtcd starts one member per -etcd-ips address, with its data in the
// temp dir and etcd's default fsync behaviour, and waits for a leader that
// every member agrees on.
func startEtcd(ctx context.Context, e *env) (*etcdCluster, error) {
	root := filepath.Join(e.dir, "etcd")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	c := &etcdCluster{e: e}
	scheme := "http://"
	if e.o.etcdTLS {
		t, err := makeEtcdTLS(filepath.Join(root, "tls"), e.o.etcdIPs)
		if err != nil {
			return nil, fmt.Errorf("etcd TLS material: %w", err)
		}
		c.tls, scheme = t, "https://"
	}
	var initial []string
	for i, ip := range e.o.etcdIPs {
		for _, port := range []string{"2379", "2380"} {
			if err := checkFree(ip, port); err != nil {
				return nil, err
			}
		}
		m := &etcdMember{
			name: fmt.Sprintf("e%d", i+1), ip: ip,
			clientURL: scheme + ip + ":2379", peerURL: scheme + ip + ":2380",
			dataDir: filepath.Join(root, fmt.Sprintf("e%d", i+1)), logPath: filepath.Join(root, fmt.Sprintf("e%d.log", i+1)),
		}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peerURL)
	}
	ok := false
	defer func() {
		if !ok {
			c.stop()
		}
	}()
	e.logf("etcd: starting %d members on %s", len(c.members), strings.Join(e.o.etcdIPs, ", "))
	for _, m := range c.members {
		var err error
		var tlsArgs []string
		if c.tls != nil {
			tlsArgs = c.tls.args(m.ip)
		}
		if e.o.pprofDir != "" {
			// pprof on the client URL, so that -pprof profiles the
			// reference as it profiles shoal (plain HTTP only).
			tlsArgs = append(tlsArgs, "--enable-pprof")
		}
		m.proc, err = e.sup.start("etcd/"+m.name, m.logPath, nil, e.o.etcdBin, append(tlsArgs,
			"--name", m.name,
			"--data-dir", m.dataDir,
			"--listen-client-urls", m.clientURL,
			"--advertise-client-urls", m.clientURL,
			"--listen-peer-urls", m.peerURL,
			"--initial-advertise-peer-urls", m.peerURL,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-token", "shoal-bench",
			"--initial-cluster-state", "new",
			"--logger", "zap", "--log-outputs", "stderr",
		)...)
		if err != nil {
			return nil, err
		}
		e.addLog(m.logPath)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := c.checkAlive(); err != nil {
			return nil, err
		}
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := c.leader(lctx)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("waiting for an etcd leader: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	ok = true
	return c, nil
}

// leader asks every member for its status and returns the leader, once all
// members agree on it.
func (c *etcdCluster) leader(ctx context.Context) (*etcdMember, error) {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.clientURL)
	}
	cfg := c.clientConfig(ctx, eps...)
	cfg.DialTimeout = 2 * time.Second
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	var leaderID uint64
	var leader *etcdMember
	for _, m := range c.members {
		st, err := cli.Status(ctx, m.clientURL)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.name, err)
		}
		if st.Leader == 0 {
			return nil, fmt.Errorf("%s: no leader", m.name)
		}
		if leaderID != 0 && st.Leader != leaderID {
			return nil, fmt.Errorf("members disagree on the leader (%x, %x)", leaderID, st.Leader)
		}
		leaderID = st.Leader
		if st.Header.GetMemberId() == st.Leader {
			leader = m
		}
	}
	if leader == nil {
		return nil, errors.New("no member says it is the leader")
	}
	return leader, nil
}
