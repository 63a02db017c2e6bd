package httpapi

import (
	"io"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/proto"
)

// ndjson is protojson with streams as NDJSON: one {"result": ...} (or
// {"error": ...}) object per line.
type ndjson struct{ *runtime.JSONPb }

// Marshal writes a message with appendJSON (protojson's output, faster);
// anything else (a stream's {"result": ...} chunk) as runtime.JSONPb.
func (m *ndjson) Marshal(v any) ([]byte, error) {
	if msg, ok := v.(proto.Message); ok {
		return marshalJSON(m.JSONPb.Marshal, msg)
	}
	return m.JSONPb.Marshal(v)
}

// NewDecoder decodes request bodies with unmarshalJSON (bodyDecoder).
func (m *ndjson) NewDecoder(r io.Reader) runtime.Decoder { return bodyDecoder{r, m.JSONPb} }

// StreamContentType implements runtime.StreamContentType.
func (*ndjson) StreamContentType(any) string { return "application/x-ndjson" }

// sse is protojson with streams as server-sent events ("data: <json>"
// and a blank line per message), chosen with Accept: text/event-stream.
type sse struct{ *runtime.JSONPb }

// Marshal prefixes each message with the SSE field name. protojson never
// writes a newline without Indent, so a message is one data line.
func (m *sse) Marshal(v any) ([]byte, error) {
	b, err := (&ndjson{m.JSONPb}).Marshal(v)
	if err != nil {
		return nil, err
	}
	return append([]byte("data: "), b...), nil
}

// NewDecoder decodes request bodies with unmarshalJSON (bodyDecoder).
func (m *sse) NewDecoder(r io.Reader) runtime.Decoder { return bodyDecoder{r, m.JSONPb} }

// Delimiter ends an event.
func (*sse) Delimiter() []byte { return []byte("\n\n") }

// ContentType implements runtime.Marshaler.
func (*sse) ContentType(any) string { return "text/event-stream" }
