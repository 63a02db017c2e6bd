package raftstore

import (
	"io"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// A follower that takes a leader-connection report and then grants another
// follower's pre-vote leaves the election to it: campaigning too, within
// the same 0–HeartbeatTimeout/4, would split the vote (both vote for
// themselves in the next term) and cost an election timeout.

// lossTransport is an in-memory transport whose leader-connection reports
// the test sends.
type lossTransport struct {
	*raft.InmemTransport
	loss chan raft.LeaderConnLoss
}

func (t *lossTransport) LeaderConnLost() <-chan raft.LeaderConnLoss { return t.loss }

type nopFSM struct{}

func (nopFSM) Apply(*raft.Log) interface{}         { return nil }
func (nopFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, io.EOF }
func (nopFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

const lossHB = 2 * time.Second

// lossFollower starts follower "a" of voters a, l, b, hears leader l in
// term 1, and has l's last connection reported. It returns a's raft, its
// state changes, and b's transport connected to a.
func lossFollower(t *testing.T) (*raft.Raft, <-chan raft.Observation, *raft.InmemTransport) {
	return lossFollowerWith(t, "b")
}

// lossFollowerWith is lossFollower with the other follower named other:
// "b" sorts after "a" (a campaigns first), "0" before it (a second).
func lossFollowerWith(t *testing.T, other string) (*raft.Raft, <-chan raft.Observation, *raft.InmemTransport) {
	t.Helper()
	_, at := raft.NewInmemTransport("a")
	trans := &lossTransport{InmemTransport: at, loss: make(chan raft.LeaderConnLoss, 1)}
	_, lt := raft.NewInmemTransport("l")
	_, bt := raft.NewInmemTransport(raft.ServerAddress(other))
	lt.Connect("a", at)
	bt.Connect("a", at)
	t.Cleanup(func() { lt.Close(); bt.Close() })

	conf := raft.DefaultConfig()
	conf.LocalID = "a"
	conf.HeartbeatTimeout = lossHB
	conf.ElectionTimeout = lossHB
	conf.LeaderLeaseTimeout = lossHB
	conf.Logger = hclog.NewNullLogger()
	store := raft.NewInmemStore()
	snaps := raft.NewInmemSnapshotStore()
	servers := raft.Configuration{Servers: []raft.Server{
		{ID: "a", Address: "a"}, {ID: "l", Address: "l"}, {ID: raft.ServerID(other), Address: raft.ServerAddress(other)},
	}}
	if err := raft.BootstrapCluster(conf, store, store, snaps, trans, servers); err != nil {
		t.Fatal(err)
	}
	r, err := raft.NewRaft(conf, nopFSM{}, store, store, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Shutdown().Error(); err != nil {
			t.Error(err)
		}
		at.Close()
	})
	states := make(chan raft.Observation, 16)
	r.RegisterObserver(raft.NewObserver(states, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.RaftState)
		return ok
	}))

	hdr := func(id string) raft.RPCHeader {
		return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte(id)}
	}
	var ae raft.AppendEntriesResponse
	if err := lt.AppendEntries("a", "a", &raft.AppendEntriesRequest{RPCHeader: hdr("l"), Term: 1,
		PrevLogEntry: 1, PrevLogTerm: 1, LeaderCommitIndex: 1}, &ae); err != nil || !ae.Success {
		t.Fatalf("heartbeat from l: %v, %+v", err, ae)
	}
	if _, id := r.LeaderWithID(); id != "l" {
		t.Fatalf("a's leader is %q, want l", id)
	}
	trans.loss <- raft.LeaderConnLoss{ID: "l", Addr: "l", Term: 1, At: time.Now()}
	// The report is taken: a clears its leader.
	deadline := time.Now().Add(waitFor)
	for {
		if addr, _ := r.LeaderWithID(); addr == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a kept its leader after the report")
		}
		time.Sleep(time.Millisecond)
	}
	return r, states, bt
}

// candidateWithin reports whether r became a candidate within d.
func candidateWithin(states <-chan raft.Observation, d time.Duration) bool {
	timeout := time.After(d)
	for {
		select {
		case o := <-states:
			if o.Data.(raft.RaftState) == raft.Candidate {
				return true
			}
		case <-timeout:
			return false
		}
	}
}

// window covers the report's delay (at most HeartbeatTimeout/4) with a
// margin, and ends before a heartbeat timeout could.
const lossWindow = lossHB/4 + 500*time.Millisecond

// TestFailoverReportCampaignsInIDOrder: the followers of a lost leader
// campaign in the order of their IDs, a heartbeat timeout/4 apart: "a",
// second after "0", waits past lossHB/4 (the first's pre-vote would reach
// it meanwhile and cancel its campaign) and then campaigns. With one
// random delay for both, two followers campaigned at once in about one
// failover in twenty and split the vote.
func TestFailoverReportCampaignsInIDOrder(t *testing.T) {
	_, states, _ := lossFollowerWith(t, "0")
	if candidateWithin(states, lossHB/4-100*time.Millisecond) {
		t.Fatalf("a, second in ID order, campaigned within %v of the report", lossHB/4-100*time.Millisecond)
	}
	if !candidateWithin(states, lossHB/16+500*time.Millisecond) {
		t.Fatalf("a, second in ID order, did not campaign within %v of the report", lossHB/4+lossHB/16+500*time.Millisecond)
	}
}

func TestFailoverReportCampaigns(t *testing.T) {
	_, states, _ := lossFollower(t)
	if !candidateWithin(states, lossWindow) {
		t.Fatalf("a did not campaign within %v of the report", lossWindow)
	}
}

func TestFailoverPreVoteGrantedAfterReportLeavesTheElection(t *testing.T) {
	r, states, bt := lossFollower(t)
	var resp raft.RequestPreVoteResponse
	req := raft.RequestPreVoteRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("b"), Addr: []byte("b")},
		Term:      2, LastLogIndex: 1, LastLogTerm: 1,
	}
	if err := bt.RequestPreVote("a", "a", &req, &resp); err != nil || !resp.Granted {
		t.Fatalf("b's pre-vote: %v, %+v", err, resp)
	}
	if candidateWithin(states, lossWindow) {
		t.Fatal("a campaigned after granting b's pre-vote")
	}
	if st := r.State(); st != raft.Follower {
		t.Fatalf("a is %v", st)
	}
}
