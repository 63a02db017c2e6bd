package gossipkeys

import (
	"bytes"
	"crypto/rand"
	"time"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

const (
	// KeySize is the size of a gossip key (AES-256).
	KeySize = 32
	// MaxKeys bounds the keys kept while drops are pending: rotations
	// faster than the grace period push the oldest out.
	MaxKeys = 4
	// MinGrace is the shortest wait between a rotation and the drop of
	// the keys it superseded.
	MinGrace = 10 * time.Second

	// The dispatcher's defaults (manager/dispatcher), for settings left 0;
	// repeated here so that this package stays free of the dispatcher.
	defaultHeartbeatPeriod = 500 * time.Millisecond
	defaultDownAfterMissed = 4
)

// Rotate returns keys with a new random key first; the older keys stay
// (at most MaxKeys in all) until the Dropper drops them. Never log keys.
func Rotate(keys [][]byte) ([][]byte, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, errdefs.Internalf("generating a gossip key: %v", err)
	}
	out := append([][]byte{k}, keys...)
	if len(out) > MaxKeys {
		out = out[:MaxKeys]
	}
	return out, nil
}

// Drop returns keys without the ones older than keep (keys are newest
// first), and whether anything was dropped. A keep that is no longer
// listed (pushed out by later rotations) drops nothing: a later
// rotation's drop will.
func Drop(keys [][]byte, keep []byte) ([][]byte, bool) {
	for i, k := range keys {
		if bytes.Equal(k, keep) {
			if i == len(keys)-1 {
				return keys, false
			}
			return keys[:i+1], true
		}
	}
	return keys, false
}

// Grace is how long superseded keys stay accepted after a rotation: twice
// the time the dispatcher takes to mark a silent node down (heartbeat
// period × missed heartbeats), at least MinGrace. A live node has its
// session, hence the new keys, well within it.
func Grace(s *shoalv1.ClusterSettings) time.Duration {
	period := time.Duration(s.GetHeartbeatPeriodMs()) * time.Millisecond
	if period <= 0 {
		period = defaultHeartbeatPeriod
	}
	missed := int(s.GetNodeDownAfterMissed())
	if missed <= 0 {
		missed = defaultDownAfterMissed
	}
	return max(MinGrace, 2*period*time.Duration(missed))
}
