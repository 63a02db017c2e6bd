package agent

import (
	"bytes"
	"io"
	"log/slog"
	"slices"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

type recordGossip struct {
	keys  [][]byte
	peers []string
	calls int
}

func (r *recordGossip) SetGossip(keys [][]byte, peers []string) {
	r.keys, r.peers = keys, peers
	r.calls++
}

// TestGossipMessageHandedOn: SessionMessage.gossip reaches the consumer
// as sent (keys newest first); without a consumer it is ignored.
func TestGossipMessageHandedOn(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	rec := &recordGossip{}
	a := New(Config{NodeID: "n", Gossip: rec, Logger: quiet})
	k := [][]byte{bytes.Repeat([]byte{2}, 32), bytes.Repeat([]byte{1}, 32)}
	msg := &shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Gossip{Gossip: &shoalv1.Gossip{Keys: k, Peers: []string{"10.0.0.1:7946"}}}}
	if err := a.handle(msg); err != nil {
		t.Fatal(err)
	}
	if rec.calls != 1 || len(rec.keys) != 2 || !bytes.Equal(rec.keys[0], k[0]) || !slices.Equal(rec.peers, []string{"10.0.0.1:7946"}) {
		t.Fatalf("consumer got %+v", rec)
	}
	if err := New(Config{NodeID: "n", Logger: quiet}).handle(msg); err != nil {
		t.Fatal(err)
	}
}
