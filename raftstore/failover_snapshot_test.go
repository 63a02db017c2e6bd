package raftstore

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// A leader closes the connection an InstallSnapshot used once it is done
// (even one taken from its pool, which may be the only one that carried
// its AppendEntries): that closing is not reported as the leader's loss.

// snapTransport is a NetworkTransport with a pool of one on a tlsStream
// over loopback.
func snapTransport(t *testing.T, serverTLS, clientTLS *tls.Config) (*raft.NetworkTransport, *tlsStream) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS)
	if err != nil {
		t.Fatal(err)
	}
	stream := &tlsStream{ln: ln, client: clientTLS, blocked: map[string]bool{}}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 1, Timeout: 2 * time.Second, Logger: hclog.NewNullLogger(),
	})
	t.Cleanup(func() {
		trans.Close()
		stream.kill()
	})
	return trans, stream
}

// answer responds to every RPC on trans (reading a snapshot's data) until
// stop closes.
func answer(trans *raft.NetworkTransport, stop <-chan struct{}) {
	for {
		select {
		case rpc := <-trans.Consumer():
			switch rpc.Command.(type) {
			case *raft.AppendEntriesRequest:
				rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
			case *raft.InstallSnapshotRequest:
				_, err := io.Copy(io.Discard, rpc.Reader)
				rpc.Respond(&raft.InstallSnapshotResponse{Term: 1, Success: err == nil}, err)
			default:
				rpc.Respond(nil, io.ErrUnexpectedEOF)
			}
		case <-stop:
			return
		}
	}
}

func TestFailoverSnapshotConnNotReported(t *testing.T) {
	serverTLS, clientTLS := failTLS(t)
	lt, ls := snapTransport(t, serverTLS, clientTLS)
	ft, fs := snapTransport(t, serverTLS, clientTLS)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); answer(ft, stop) }()
	t.Cleanup(func() { close(stop); <-done })
	faddr := raft.ServerAddress(ft.LocalAddr())
	hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("l"),
		Addr: lt.EncodePeer("l", lt.LocalAddr())}

	heartbeat := func() {
		t.Helper()
		var resp raft.AppendEntriesResponse
		if err := lt.AppendEntries("f", faddr, &raft.AppendEntriesRequest{RPCHeader: hdr, Term: 1}, &resp); err != nil {
			t.Fatal(err)
		}
	}
	// The heartbeat's connection goes back to the pool of one; the
	// snapshot takes it, and the transport closes it after.
	heartbeat()
	data := bytes.Repeat([]byte("s"), 4096)
	var sresp raft.InstallSnapshotResponse
	sreq := raft.InstallSnapshotRequest{RPCHeader: hdr, SnapshotVersion: raft.SnapshotVersionMax,
		Term: 1, Leader: hdr.Addr, LastLogIndex: 10, LastLogTerm: 1, Size: int64(len(data))}
	if err := lt.InstallSnapshot("f", faddr, &sreq, &sresp, bytes.NewReader(data)); err != nil || !sresp.Success {
		t.Fatalf("InstallSnapshot: %v, %+v", err, sresp)
	}
	dialed := ls.dialedTo(string(faddr))
	if len(dialed) != 1 || !dialed[0].isClosed() {
		t.Fatalf("leader's connections %d, want the one the snapshot closed", len(dialed))
	}
	waitAcceptedClosed(t, fs, dialed[0].LocalAddr())
	select {
	case loss := <-ft.LeaderConnLost():
		t.Fatalf("reported %+v after a snapshot's connection closed", loss)
	default:
	}

	// Control: a heartbeat's connection closing is reported.
	heartbeat()
	dialed = ls.dialedTo(string(faddr))
	if ls.block(string(faddr), true) != 1 {
		t.Fatal("want one open connection to close")
	}
	select {
	case loss := <-ft.LeaderConnLost():
		if loss.ID != "l" || loss.Term != 1 {
			t.Fatalf("reported %+v", loss)
		}
	case <-time.After(waitFor):
		t.Fatal("the heartbeat connection's end was not reported")
	}
	waitAcceptedClosed(t, fs, dialed[len(dialed)-1].LocalAddr())
}

// waitAcceptedClosed waits until the follower's end of the connection from
// local is closed: its handler, and the report it may send, are done.
func waitAcceptedClosed(t *testing.T, fs *tlsStream, local net.Addr) {
	t.Helper()
	eventually(t, "the follower's end closes", func() error {
		if in := fs.acceptedFrom(local.String()); in == nil || !in.isClosed() {
			return io.ErrNoProgress
		}
		return nil
	})
}
