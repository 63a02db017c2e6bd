package httpapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/proto"
)

// streamPaths are the server-streaming routes of proto/shoalv1/http.yaml.
var streamPaths = map[string]bool{"/v1/events": true, "/v1/logs": true, "/v1/stats": true}

// streamTypeKey carries a stream request's reply Content-Type to
// streamHeaders, which is not handed the request.
type streamTypeKey struct{}

// withStreamType notes the Content-Type the gateway will give a stream
// reply (NDJSON, or SSE with Accept: text/event-stream), for a GET of a
// stream route only: unary calls go on untouched.
func withStreamType(gw *runtime.ServeMux, r *http.Request) *http.Request {
	if r.Method != http.MethodGet || !streamPaths[strings.TrimSuffix(r.URL.Path, "/")] {
		return r
	}
	_, m := runtime.MarshalerForRequest(gw, r)
	ct := m.ContentType(nil)
	if s, ok := m.(runtime.StreamContentType); ok {
		ct = s.StreamContentType(nil)
	}
	return r.WithContext(context.WithValue(r.Context(), streamTypeKey{}, ct))
}

// streamHeaders is the gateway's forward-response option. The gateway
// calls it with no message when a stream starts, after the gRPC server's
// headers arrived, and would otherwise write the HTTP status and headers
// only with the first message: a watch with nothing happening, or a
// followed log of quiet tasks, would leave its client "connecting" for as
// long. So it writes 200 and the headers and flushes them at once — but
// only when the server did send headers (the stream handlers send them as
// soon as the call is accepted: Watch, ServiceLogs, TaskStats): a call
// refused before that ends with no headers (trailers only), and keeps its
// HTTP error status (400, 403, 404, OUT_OF_RANGE's 400, 503). An error
// after this point goes in the body as {"error": ...}, as any later one.
func streamHeaders(ctx context.Context, w http.ResponseWriter, m proto.Message) error {
	if m != nil {
		return nil // a unary reply, or a stream's message: nothing to do
	}
	md, ok := runtime.ServerMetadataFromContext(ctx)
	if !ok || len(md.HeaderMD) == 0 {
		return nil
	}
	if ct, ok := ctx.Value(streamTypeKey{}).(string); ok {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(http.StatusOK)
	// A failed flush means the client went away; the stream's first write
	// finds that out and ends the call.
	_ = http.NewResponseController(w).Flush()
	return nil
}
