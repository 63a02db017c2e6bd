package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestAgentsFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // "" = accepted
	}{
		{[]string{"-agents", "-1", "-only", "shoal"}, "-agents: want a number of simulated agents >= 0, got -1"},
		{[]string{"-agents", "10", "-only", "etcd"}, `-agents: the agents join the shoal clusters of the throughput cells; want -only shoal or all, got "etcd"`},
		{[]string{"-agents", "10", "-only", "none"}, `want -only shoal or all, got "none"`},
		{[]string{"-agents", "10", "-failover", "3"}, `want -only shoal or all, got "none"`},
		{[]string{"-agents-network", "-only", "shoal"}, "-agents-network: needs -agents N > 0"},
		{[]string{"-agents", "0", "-agents-network"}, "-agents-network: needs -agents N > 0"},
		{[]string{"-agents", "10", "-only", "shoal"}, ""},
		{[]string{"-agents", "10", "-agents-network"}, ""},
		{[]string{"-agents", "0", "-only", "etcd"}, ""},
	} {
		o, err := parseFlags(tc.args)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q = %v, want an error with %q", tc.args, err, tc.want)
		case tc.want == "" && o.agents != atoiArg(tc.args, "-agents"):
			t.Errorf("%q: agents = %d", tc.args, o.agents)
		}
	}
}

// atoiArg is the number after name in args (0 if absent).
func atoiArg(args []string, name string) int {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			n := 0
			for _, c := range args[i+1] {
				n = n*10 + int(c-'0')
			}
			return n
		}
	}
	return 0
}

func TestAgentsInReport(t *testing.T) {
	o, err := parseFlags([]string{"-agents", "7", "-agents-network", "-only", "shoal"})
	if err != nil {
		t.Fatal(err)
	}
	r := newReport(o)
	r.Cells = []cellResult{{System: "shoal", Members: 3, Concurrency: 1, Ops: 1}}
	var md strings.Builder
	r.markdown(&md)
	if !strings.Contains(md.String(), "Agents: 7 simulated agents connected") || !strings.Contains(md.String(), "overlay network") {
		t.Errorf("markdown header does not name the agents:\n%s", md.String())
	}
	j := r.json()
	if j.Meta.Agents != 7 || !j.Meta.AgentsNetwork {
		t.Errorf("JSON meta: agents %d, network %v; want 7, true", j.Meta.Agents, j.Meta.AgentsNetwork)
	}
	r = newReport(&options{})
	r.Cells = []cellResult{{System: "shoal", Members: 3, Concurrency: 1, Ops: 1}}
	md.Reset()
	r.markdown(&md)
	if !strings.Contains(md.String(), "Agents: none connected (0).") {
		t.Errorf("markdown header without agents does not say so:\n%s", md.String())
	}
}

func TestAgentsServiceSpec(t *testing.T) {
	s := agentsServiceSpec(5, "net")
	if s.GetReplicas() != 5 || s.GetTask().GetPlacement().GetMaxReplicasPerNode() != 1 ||
		len(s.GetTask().GetPlacement().GetConstraints()) != 1 || s.GetTask().GetPlacement().GetConstraints()[0] != "node.role==worker" ||
		len(s.GetTask().GetNetworks()) != 1 || s.GetTask().GetNetworks()[0].GetTarget() != "net" {
		t.Errorf("agentsServiceSpec(5, net) = %v", s)
	}
}

// TestStartAgentsJoinFailure: a join that fails stops the setup with the
// error, and no fleet is left to stop.
func TestStartAgentsJoinFailure(t *testing.T) {
	o, err := parseFlags([]string{"-agents", "3", "-only", "shoal"})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{o: o, sup: newSupervisor(), start: time.Now()}
	c := &shoalCluster{e: e, nodes: []*shoalNode{newShoalNode(t.TempDir(), "m1", "127.0.0.1", false)},
		tokens: &shoalv1.JoinTokens{Worker: "SHOAL-1-notadigest-notasecret"}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stop, _, err := startAgents(ctx, e, c, c.nodes[0], nil, "test")
	if err == nil || !strings.Contains(err.Error(), "joining simulated node sim-000") {
		t.Errorf("startAgents with a bad token: err %v, want the join's error", err)
	}
	if stop != nil {
		t.Error("startAgents failed but returned a stop function")
	}
}

// TestStartAgentsStopsItsFleetOnError: onError, as startAgents defers it,
// undoes once when the function fails with its other results nil, and not
// when it succeeds.
func TestStartAgentsStopsItsFleetOnError(t *testing.T) {
	undone := 0
	setup := func(fail bool) (stop func(), err error) {
		stopFleet := func() { undone++ }
		defer onError(&err, stopFleet)
		if fail {
			return nil, errors.New("the service did not come up")
		}
		return stopFleet, nil
	}
	if stop, err := setup(true); err == nil || stop != nil || undone != 1 {
		t.Fatalf("failed setup: stop %v, err %v, undone %d times; want nil, an error, 1", stop != nil, err, undone)
	}
	if stop, err := setup(false); err != nil || stop == nil || undone != 1 {
		t.Fatalf("setup: stop %v, err %v, undone %d times in all; want a stop, no error, still 1", stop != nil, err, undone)
	}
}
