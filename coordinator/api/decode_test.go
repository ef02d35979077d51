package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/execq/execq/shared"
)

// heartbeatBody is a heartbeat carrying shared.MaxRequestOutputBytes of
// output in two chunks, the most an agent sends in one request.
func heartbeatBody(tb testing.TB) []byte {
	half := shared.MaxRequestOutputBytes / 2
	data := make([]byte, half)
	for i := range data {
		data[i] = byte(i * 7)
	}
	js, err := json.Marshal(shared.HeartbeatRequest{Attempt: 1, Chunks: []shared.Chunk{
		{Stream: shared.StreamStdout, Offset: 0, Data: data},
		{Stream: shared.StreamStderr, Offset: 0, Data: data},
	}})
	if err != nil {
		tb.Fatal(err)
	}
	return js
}

// BenchmarkDecodeHeartbeat: what decodeJSON costs on the largest heartbeat
// (strict UTF-8, duplicate and case checks included).
func BenchmarkDecodeHeartbeat(b *testing.B) {
	body := heartbeatBody(b)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		var req shared.HeartbeatRequest
		if err := decodeJSON(httptest.NewRecorder(), r, MaxChunkBody, &req); err != nil {
			b.Fatal(err)
		}
	}
}
