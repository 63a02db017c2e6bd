package manager

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// rawCodec passes []byte messages as they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "raw" }

// With the manager's fixed 2 MiB windows, messages larger than a window
// (a 3.5 MiB request, as a big spec or a raft batch; the same back, as a
// big list page) still flow both ways on a stream, several in a row: the
// receiver opens its window for a whole message it is reading.
func TestServerFixedWindowPassesLargeMessages(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(tuningOptions(), grpc.ForceServerCodec(rawCodec{}),
		grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
			for {
				var m []byte
				if err := ss.RecvMsg(&m); err == io.EOF {
					return nil
				} else if err != nil {
					return err
				}
				if err := ss.SendMsg(&m); err != nil {
					return err
				}
			}
		}))
	srv := grpc.NewServer(opts...)
	go srv.Serve(ln)
	defer srv.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStaticStreamWindowSize(serverWindow), grpc.WithStaticConnWindowSize(serverWindow))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/test.Echo/Echo", grpc.ForceCodec(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat([]byte{7}, 3<<20+1<<19)
	for i := range 4 {
		if err := st.SendMsg(&msg); err != nil {
			t.Fatalf("message %d: send: %v", i, err)
		}
		var back []byte
		if err := st.RecvMsg(&back); err != nil {
			t.Fatalf("message %d: receive: %v", i, err)
		}
		if !bytes.Equal(back, msg) {
			t.Fatalf("message %d: %d bytes back, want the %d sent", i, len(back), len(msg))
		}
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
}
