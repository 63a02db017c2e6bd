package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// What hashicorp/raft's NetworkTransport spends decoding one
// AppendEntries on a follower (its msgpack codec, set up as handleConn
// sets it up), against what a fixed binary frame of the same request would
// cost (frameAppendEntries / decodeFrame below: a sketch kept only as this
// measurement's reference, not a transport). The figures decide whether a
// transport of our own behind raft.Transport pays (docs/performance.md,
// seventh round): at 256 writers an AppendEntries carries 14–26 entries of
// a few hundred bytes.

// entryBytes is about one bench write's raft entry (a service update with
// a 100-byte label).
const entryBytes = 400

func appendEntriesOf(n int) *raft.AppendEntriesRequest {
	req := &raft.AppendEntriesRequest{
		RPCHeader:    raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("m1-node-id-0123456789abcdef"), Addr: []byte("10.0.0.1:4242")},
		Term:         7,
		Leader:       []byte("10.0.0.1:4242"),
		PrevLogEntry: 100_000, PrevLogTerm: 7, LeaderCommitIndex: 99_990,
	}
	at := time.Unix(1_796_600_000, 123_456_789)
	for i := range n {
		data := bytes.Repeat([]byte{byte(i)}, entryBytes)
		req.Entries = append(req.Entries, &raft.Log{Index: uint64(100_001 + i), Term: 7, Type: raft.LogCommand, Data: data, AppendedAt: at})
	}
	return req
}

// msgpackAppendEntries is the request as NetworkTransport writes it (after
// the rpc type byte).
func msgpackAppendEntries(tb testing.TB, req *raft.AppendEntriesRequest) []byte {
	var buf bytes.Buffer
	enc := codec.NewEncoder(&buf, &codec.MsgpackHandle{BasicHandle: codec.BasicHandle{TimeNotBuiltin: true}})
	if err := enc.Encode(req); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// frameAppendEntries is the same request as a fixed binary frame: the
// header's integers as uvarints, byte strings length-prefixed, each entry
// index, term, type, appended-at (Unix ns), extensions and data.
func frameAppendEntries(req *raft.AppendEntriesRequest) []byte { return appendFrame(nil, req) }

// appendFrame appends req's frame to b (a transport's reused buffer).
func appendFrame(b []byte, req *raft.AppendEntriesRequest) []byte {
	b = binary.AppendUvarint(b, uint64(req.ProtocolVersion))
	bytesField := func(p []byte) { b = binary.AppendUvarint(b, uint64(len(p))); b = append(b, p...) }
	bytesField(req.ID)
	bytesField(req.Addr)
	bytesField(req.Leader)
	for _, v := range []uint64{req.Term, req.PrevLogEntry, req.PrevLogTerm, req.LeaderCommitIndex, uint64(len(req.Entries))} {
		b = binary.AppendUvarint(b, v)
	}
	for _, e := range req.Entries {
		b = binary.AppendUvarint(b, e.Index)
		b = binary.AppendUvarint(b, e.Term)
		b = append(b, byte(e.Type))
		b = binary.AppendVarint(b, e.AppendedAt.UnixNano())
		bytesField(e.Extensions)
		bytesField(e.Data)
	}
	return b
}

var errShortFrame = errors.New("short frame")

// decodeFrame reads a frame of frameAppendEntries; the byte strings alias
// the frame (one buffer per request, as a transport would read it), the
// entries are one slice.
func decodeFrame(b []byte) (*raft.AppendEntriesRequest, error) {
	var err error
	uv := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			err = errShortFrame
			return 0
		}
		b = b[n:]
		return v
	}
	bs := func() []byte {
		n := uv()
		if err != nil || uint64(len(b)) < n {
			err = errShortFrame
			return nil
		}
		p := b[:n:n]
		b = b[n:]
		return p
	}
	req := &raft.AppendEntriesRequest{}
	req.ProtocolVersion = raft.ProtocolVersion(uv())
	req.ID, req.Addr, req.Leader = bs(), bs(), bs()
	req.Term, req.PrevLogEntry, req.PrevLogTerm, req.LeaderCommitIndex = uv(), uv(), uv(), uv()
	n := uv()
	if err != nil || n > uint64(len(b)) {
		return nil, errShortFrame
	}
	logs := make([]raft.Log, n)
	req.Entries = make([]*raft.Log, n)
	for i := range logs {
		e := &logs[i]
		e.Index, e.Term = uv(), uv()
		if err != nil || len(b) == 0 {
			return nil, errShortFrame
		}
		e.Type = raft.LogType(b[0])
		b = b[1:]
		ns, k := binary.Varint(b)
		if k <= 0 {
			return nil, errShortFrame
		}
		b = b[k:]
		e.AppendedAt = time.Unix(0, ns)
		e.Extensions, e.Data = bs(), bs()
		if len(e.Extensions) == 0 {
			e.Extensions = nil
		}
		req.Entries[i] = e
	}
	return req, err
}

// The reference frame carries what msgpack carries: both decode to the
// same request (so the two benchmarks below compare like with like).
func TestFrameDecodesAsMsgpack(t *testing.T) {
	for _, n := range []int{0, 1, 16} {
		want := appendEntriesOf(n)
		var viaMsgpack raft.AppendEntriesRequest
		dec := codec.NewDecoder(bufio.NewReader(bytes.NewReader(msgpackAppendEntries(t, want))), &codec.MsgpackHandle{})
		if err := dec.Decode(&viaMsgpack); err != nil {
			t.Fatal(err)
		}
		viaFrame, err := decodeFrame(frameAppendEntries(want))
		if err != nil {
			t.Fatal(err)
		}
		for name, got := range map[string]*raft.AppendEntriesRequest{"msgpack": &viaMsgpack, "frame": viaFrame} {
			if g, w := fmt.Sprintf("%+v %d", got.RPCHeader, []uint64{got.Term, got.PrevLogEntry, got.PrevLogTerm, got.LeaderCommitIndex}),
				fmt.Sprintf("%+v %d", want.RPCHeader, []uint64{want.Term, want.PrevLogEntry, want.PrevLogTerm, want.LeaderCommitIndex}); g != w {
				t.Errorf("%s, %d entries: header %s, want %s", name, n, g, w)
			}
			if len(got.Entries) != n {
				t.Fatalf("%s: %d entries, want %d", name, len(got.Entries), n)
			}
			for i, e := range got.Entries {
				w := want.Entries[i]
				if e.Index != w.Index || e.Term != w.Term || e.Type != w.Type || !bytes.Equal(e.Data, w.Data) || !e.AppendedAt.Equal(w.AppendedAt) {
					t.Errorf("%s: entry %d = %+v, want %+v", name, i, e, w)
				}
			}
		}
		if _, err := decodeFrame(frameAppendEntries(want)[:10]); n > 0 && err == nil {
			t.Errorf("%d entries: a cut frame decoded", n)
		}
	}
}

// BenchmarkAppendEntriesDecode: ns and allocations per AppendEntries of
// 1, 16 and 64 entries, decoded by msgpack on a reused decoder (as
// handleConn does) and from the fixed frame; bytes/op is the wire size.
func BenchmarkAppendEntriesDecode(b *testing.B) {
	for _, n := range []int{1, 16, 64} {
		req := appendEntriesOf(n)
		mp := msgpackAppendEntries(b, req)
		b.Run(fmt.Sprintf("msgpack/entries=%d", n), func(b *testing.B) {
			r := bytes.NewReader(mp)
			br := bufio.NewReaderSize(r, 256<<10)
			dec := codec.NewDecoder(br, &codec.MsgpackHandle{})
			b.SetBytes(int64(len(mp)))
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(mp)
				br.Reset(r)
				var out raft.AppendEntriesRequest
				if err := dec.Decode(&out); err != nil {
					b.Fatal(err)
				}
			}
		})
		fr := frameAppendEntries(req)
		b.Run(fmt.Sprintf("frame/entries=%d", n), func(b *testing.B) {
			buf := make([]byte, len(fr))
			b.SetBytes(int64(len(fr)))
			b.ReportAllocs()
			for b.Loop() {
				// A transport reads the frame into a buffer of its own,
				// which the entries then alias: count that copy.
				p := append(buf[:0:0], fr...)
				if _, err := decodeFrame(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAppendEntriesEncode: the leader's side, per AppendEntries to
// one follower: msgpack on a reused encoder (as a pooled netConn holds
// one) into a buffered writer, against appending the fixed frame to a
// reused buffer.
func BenchmarkAppendEntriesEncode(b *testing.B) {
	for _, n := range []int{1, 16, 64} {
		req := appendEntriesOf(n)
		b.Run(fmt.Sprintf("msgpack/entries=%d", n), func(b *testing.B) {
			var buf bytes.Buffer
			w := bufio.NewWriterSize(&buf, 256<<10)
			enc := codec.NewEncoder(w, &codec.MsgpackHandle{BasicHandle: codec.BasicHandle{TimeNotBuiltin: true}})
			b.ReportAllocs()
			for b.Loop() {
				buf.Reset()
				if err := enc.Encode(req); err != nil {
					b.Fatal(err)
				}
				if err := w.Flush(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("frame/entries=%d", n), func(b *testing.B) {
			buf := appendFrame(nil, req)
			b.ReportAllocs()
			for b.Loop() {
				buf = appendFrame(buf[:0], req)
			}
		})
	}
}
