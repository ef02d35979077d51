package app_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/shared"
)

// Tests that no client can hold the server: idle connections, slow request
// bodies and slow readers are cut off, and a record with large output is
// sent with bounded memory.

// dialRaw opens a plain TCP connection to the replica, for tests that must
// misbehave below what net/http's client allows.
func (b *bundle) dialRaw() net.Conn {
	b.t.Helper()
	u, err := url.Parse(b.URL)
	if err != nil {
		b.t.Fatal(err)
	}
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		b.t.Fatalf("dial %s: %v", u.Host, err)
	}
	b.t.Cleanup(func() { c.Close() })
	return c
}

// waitClosed reads c until the server closes it, failing if that does not
// happen within bound. It returns what was read.
func waitClosed(t *testing.T, c net.Conn, bound time.Duration, what string) []byte {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(bound)); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	_, err := io.Copy(&got, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: the server still held the connection after %s (read %d bytes)", what, bound, got.Len())
	}
	return got.Bytes()
}

func TestIdleKeepAliveConnectionIsClosed(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *app.Config) { c.IdleTimeout = 500 * time.Millisecond }))
	c := b.dialRaw()
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read /healthz answer: %v", err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("/healthz: %d close=%v, want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
	}
	// Now idle: the server must hang up on its own.
	if rest := waitClosed(t, c, within, "idle keep-alive connection"); len(rest) > 0 {
		t.Fatalf("unexpected bytes on an idle connection: %q", rest)
	}
}

func TestSlowRequestBodyIsCutOff(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *app.Config) { c.ReadTimeout = time.Second }))
	for _, tc := range []struct {
		name, token string
		want        int
	}{
		{"with a token", b.Alice.Token, http.StatusRequestTimeout},
		{"without a token", "", http.StatusUnauthorized},
		{"with a bad token", "bogus", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := b.with(t)
			before := b.snapshot()
			c := b.dialRaw()
			auth := ""
			if tc.token != "" {
				auth = "Authorization: Bearer " + tc.token + "\r\n"
			}
			// Under net/http's post-handler drain limit (256 KiB), so a
			// server without a body deadline would drain it forever.
			fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
				submitPath(b.NodeA.Container), auth)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // a byte every 100ms: 100000 bytes would take hours
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
					if _, err := c.Write([]byte(" ")); err != nil {
						return
					}
				}
			}()
			got := waitClosed(t, c, within, "slow request body")
			close(stop)
			wg.Wait()
			if len(got) > 0 {
				resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(got)), nil)
				if err != nil {
					t.Fatalf("answer to a slow body is not HTTP: %v (%q)", err, got)
				}
				body, _ := io.ReadAll(resp.Body)
				var e shared.ErrorBody
				if resp.StatusCode != tc.want || json.Unmarshal(body, &e) != nil || e.Error.Code == "" {
					t.Fatalf("answer to a slow body: %d %s, want %d with a JSON error", resp.StatusCode, body, tc.want)
				}
			}
			if after := b.snapshot(); after != before {
				t.Fatalf("a slow body changed the job table:\n%s\n---\n%s", before, after)
			}
		})
	}
}

// TestLongPollsOutliveTheWriteTimeout: a long-poll waits longer than the
// write timeout and still gets its answer, because it extends its deadline
// over its wait.
func TestLongPollsOutliveTheWriteTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *app.Config) { c.WriteTimeout = 500 * time.Millisecond }))
	rec := b.submit(b.Alice, b.NodeA.Container, "true")
	var got shared.CommandExecutionRecord
	b.mustJSON(b.URL, http.MethodGet, commandPath(rec.ID)+"?wait=2s", b.Alice.Token, nil, http.StatusOK, &got)
	if got.Status != shared.StatusQueued {
		t.Fatalf("GET ?wait= status %s, want queued", got.Status)
	}
	b.mustJSON(b.URL, http.MethodPost, submitPath(b.NodeA.Container)+"?wait=2s", b.Alice.Token,
		shared.SubmitRequest{Program: "true"}, http.StatusAccepted, &got)
	// The lease poll of node B, which has no work, waits its whole wait.
	if resp := b.leaseAt(b.URL, b.NodeB, 1, 2000); len(resp.Commands) != 0 {
		t.Fatalf("node B was handed %d commands", len(resp.Commands))
	}
	var ctl shared.ControlResponse
	b.mustJSON(b.URL, http.MethodPost, shared.AgentPathControl, b.NodeB.Token,
		shared.ControlRequest{WaitMillis: 2000}, http.StatusOK, &ctl)
}

// finishWithOutput takes a command of alice to succeeded with no output
// through the agent protocol, then writes out as its stored stdout with
// sql (an expression over $1, the output's length) straight into the job
// table: the test needs a large record, not a large heartbeat.
func (b *bundle) finishWithOutput(sqlExpr string, n int64, arg any) string {
	b.t.Helper()
	lc := b.run("yes")
	if r := b.finish(b.NodeA, shared.FinishRequest{Attempt: lc.Attempt, ExitCode: exitCode(0)}, lc.ID); r.Status != http.StatusOK {
		b.t.Fatalf("finish: %s", r)
	}
	if _, err := b.DB.Exec(`UPDATE commands SET stdout = `+sqlExpr+`, stdout_len = $2 WHERE id = $3`, arg, n, lc.ID); err != nil {
		b.t.Fatalf("store large output: %v", err)
	}
	return lc.ID
}

// liveHeap is the heap in use after a collection: what the process holds,
// not garbage it has yet to collect.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestSlowReadersOfALargeRecordAreBounded: ten clients ask for a record with
// 32 MiB of output and read nothing. The coordinator must hold O(clients ×
// buffer) for them, not O(clients × output), and cut them off at the write
// deadline. Not parallel: it measures the process's heap.
func TestSlowReadersOfALargeRecordAreBounded(t *testing.T) {
	const size = 32 << 20
	const clients = 10
	b := setup(t, withConfig(func(c *app.Config) {
		c.WriteTimeout = 2 * time.Second
		c.MaxLargeReads = 4 // the rest wait their turn, holding nothing
	}))
	line := []byte("the quick brown fox jumps over the lazy dog 0123456789\n")
	out := bytes.Repeat(line, size/len(line)+1)[:size]
	id := b.finishWithOutput(`$1::bytea`, size, out)
	out = nil

	base := liveHeap()
	conns := make([]net.Conn, clients)
	for i := range conns {
		c := b.dialRaw()
		// A small receive window, so the kernel does not read for us.
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4096)
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", commandPath(id), b.Alice.Token)
		conns[i] = c
	}
	// Sample the live heap while the clients read nothing, until every
	// handler has ended: the write deadline must cut each off while its
	// client still reads nothing (32 MiB do not fit in the socket buffers
	// of a 4 KiB receive window, so none can have completed).
	// The clients are served MaxLargeReads at a time, each turn ending at
	// the write deadline: a few turns, however loaded the machine.
	const bound = 3 * within
	var peak uint64
	deadline := time.Now().Add(bound)
	for {
		n := b.recordGETsServed()
		if n >= clients {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, %d of %d handlers serving clients that read nothing have ended: the server holds the rest",
				bound, n, clients)
		}
		peak = max(peak, liveHeap())
		time.Sleep(200 * time.Millisecond)
	}
	growth := int64(peak) - int64(base)
	t.Logf("live heap growth with %d non-reading clients of a %d MiB record: %.1f MiB (%.2f× the output)",
		clients, size>>20, float64(growth)/(1<<20), float64(growth)/size)
	if growth > size {
		t.Errorf("%d non-reading clients pinned %.1f MiB of heap; want O(clients × buffer), under the output's %d MiB",
			clients, float64(growth)/(1<<20), size>>20)
	}
}

// recordGETsServed counts the GET /api/v1/commands/{id} requests whose
// handler has ended after starting a 200 answer, from the replica's
// metrics.
func (b *bundle) recordGETsServed() int {
	b.t.Helper()
	n := 0
	for line := range strings.Lines(string(b.do(http.MethodGet, "/metrics", "", nil).Body)) {
		if strings.HasPrefix(line, "execq_http_requests_total{") && strings.Contains(line, `method="GET"`) &&
			strings.Contains(line, `route="/api/v1/commands/{id}"`) && strings.Contains(line, `code="200"`) {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err != nil {
				b.t.Fatalf("metrics line %q: %v", line, err)
			}
			n += int(v)
		}
	}
	return n
}

// heapPeak samples the heap in use (without forcing collections) until stop
// is closed, and returns the highest figure seen.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	res := make(chan uint64, 1)
	go func() {
		var peak uint64
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-stop:
				res <- peak
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return res
}

// TestRecordOfNULBytesIsStreamed: a record holding 64 MiB of NUL bytes is a
// 400 MB JSON document (each NUL is \u0000). It must be sent with memory
// that does not grow with the output, and be the exact JSON the record
// encoder gives. Not parallel: it measures the process's heap.
func TestRecordOfNULBytesIsStreamed(t *testing.T) {
	const size = 64 << 20
	b := setup(t)
	id := b.finishWithOutput(`decode(repeat('00', $1::int), 'hex')`, size, size)

	base := liveHeap()
	stop := make(chan struct{})
	peak := heapPeak(stop)
	req, err := http.NewRequest(http.MethodGet, b.URL+commandPath(id), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+b.Alice.Token)
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatalf("GET the record: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		t.Fatalf("GET the record: %d %s", resp.StatusCode, body)
	}
	// The body is compared as it arrives with the document encoding/json
	// would give: the record's other fields, and stdout as size \u0000.
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	head, err := br.ReadBytes('"') // up to the opening quote of the first string
	if err != nil {
		t.Fatal(err)
	}
	prefix := append([]byte{}, head...)
	for !bytes.HasSuffix(prefix, []byte(`"stdout":"`)) {
		chunk, err := br.ReadBytes('"')
		if err != nil {
			t.Fatalf("no stdout in the record: %v (%.512s)", err, prefix)
		}
		prefix = append(prefix, chunk...)
	}
	const block = 64 << 10 // NULs compared at once
	nuls := bytes.Repeat([]byte(`\u0000`), block)
	piece := make([]byte, len(nuls))
	for i := 0; i < size; i += block {
		if _, err := io.ReadFull(br, piece); err != nil {
			t.Fatalf("stdout ends within NULs %d…%d of %d: %v", i, i+block, size, err)
		}
		if !bytes.Equal(piece, nuls) {
			t.Fatalf("stdout NULs %d…%d are not each encoded \\u0000: %.60q…", i, i+block, piece)
		}
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("read the rest of the record: %v", err)
	}
	close(stop)
	growth := int64(<-peak) - int64(base)
	t.Logf("heap growth serving a record of %d MiB of NULs: %.1f MiB", size>>20, float64(growth)/(1<<20))

	// The document without its stdout must decode to the record, and equal
	// byte for byte what encoding/json makes of it with an empty stdout.
	var rec shared.CommandExecutionRecord
	frame := append(prefix, rest...)
	if err := json.Unmarshal(frame, &rec); err != nil {
		t.Fatalf("record without its stdout is not JSON: %v (%.1024s)", err, frame)
	}
	if rec.ID != id || rec.Status != shared.StatusSucceeded || rec.Stderr != "" {
		t.Fatalf("record %+v, want %s succeeded with empty stderr", rec, id)
	}
	want, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(want, '\n'), frame) {
		t.Fatalf("record JSON differs from encoding/json's:\n got %s\nwant %s", frame, want)
	}
	if growth > size {
		t.Errorf("serving a %d MiB record raised the heap by %.1f MiB; want it bounded below the output's size",
			size>>20, float64(growth)/(1<<20))
	}
}

func TestDotSegmentPathsAreRefusedWithoutRedirect(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, tc := range []struct{ method, path string }{
		{http.MethodPost, "/api/v1/containers/..%2f..%2fetc%2fpasswd/commands"},
		{http.MethodGet, "/api/v1/containers/..%2f..%2fetc%2fpasswd/commands"},
		{http.MethodGet, "/api/v1/commands/../../healthz"},
		{http.MethodGet, "/api/v1/commands/./" + b.NodeA.Container},
		{http.MethodGet, "/api/v1/commands/%2e%2e/%2e%2e/healthz"},
		{http.MethodGet, "/api//v1/containers"},
		{http.MethodGet, "/healthz/."},
	} {
		for _, tok := range []string{b.Alice.Token, ""} {
			c := b.dialRaw()
			auth := ""
			if tok != "" {
				auth = "Authorization: Bearer " + tok + "\r\n"
			}
			body := `{"program":"id"}`
			fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
				tc.method, tc.path, auth, len(body), body)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("%s %s: %v", tc.method, tc.path, err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e shared.ErrorBody
			if (resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusBadRequest) ||
				json.Unmarshal(got, &e) != nil || e.Error.Code == "" {
				t.Errorf("%s %s (token %v): %d Location=%q %s, want a JSON 404 or 400",
					tc.method, tc.path, tok != "", resp.StatusCode, resp.Header.Get("Location"), strings.TrimSpace(string(got)))
			}
		}
	}
	if n := b.count(`SELECT count(*) FROM commands`); n != 0 {
		t.Fatalf("%d commands stored by dot-segment paths", n)
	}
}

// TestStreamedRecordIsEncodingJSONs: a record streamed from slices is byte
// for byte what encoding/json gives for the record built in memory, with
// runes and runs of invalid bytes split across the slices and the encoded
// pieces, and the omitted-bytes marker where the cap dropped bytes.
func TestStreamedRecordIsEncodingJSONs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const size = 1<<20 + 300000 // three slices, over the large-read threshold
	pattern := []byte("aé€𝄞\xff\xfe\x00\"\\<>&\u2028\n\t")
	out := bytes.Repeat(pattern, size/len(pattern)+1)[:size]
	out[32<<10-1], out[32<<10] = 0xff, 0xfe // an invalid run across two pieces
	copy(out[512<<10-2:], "𝄞")              // a rune across two slices
	copy(out[1<<20-1:], "€")
	const omitted, at = 12345, 700001
	id := b.finishWithOutput(`$1::bytea`, size, out)
	if _, err := b.DB.Exec(`UPDATE commands SET stderr = stdout, stderr_len = stdout_len + $2,
		stderr_truncated = true, stderr_omitted = $2, stderr_omitted_at = $3 WHERE id = $1`, id, omitted, at); err != nil {
		t.Fatal(err)
	}
	r := b.do(http.MethodGet, commandPath(id), b.Alice.Token, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET the record: %s", r)
	}
	var rec shared.CommandExecutionRecord
	if err := json.Unmarshal(r.Body, &rec); err != nil {
		t.Fatalf("record is not JSON: %v", err)
	}
	wantOut := strings.ToValidUTF8(string(out), "\uFFFD")
	wantErr := strings.ToValidUTF8(string(out[:at]), "\uFFFD") + shared.OmittedMarker(omitted) +
		strings.ToValidUTF8(string(out[at:]), "\uFFFD")
	if rec.Stdout != wantOut || rec.Stderr != wantErr {
		t.Fatalf("streamed output differs from the record's rendering (stdout equal %v, stderr equal %v)",
			rec.Stdout == wantOut, rec.Stderr == wantErr)
	}
	want, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(want, '\n'), r.Body) {
		t.Fatalf("streamed record differs from encoding/json's bytes")
	}
}

// startH2Replica is startReplica served over TLS with HTTP/2, whose
// per-stream write timer runs while a handler writes nothing; it returns the
// replica and a client that trusts it.
func startH2Replica(t testing.TB, dbURL string, mod func(*app.Config)) (*replica, *http.Client) {
	t.Helper()
	r, srv := serveReplica(t, dbURL, func(srv *httptest.Server) {
		srv.EnableHTTP2 = true
		srv.StartTLS()
	}, withConfig(mod))
	c := srv.Client()
	c.Timeout = 2 * time.Minute
	return r, c
}

// TestLongWaitsOutliveTheWriteTimeoutOverHTTP2: over HTTP/2 a stream whose
// write deadline passes is reset even while nothing is being written, so a
// long-poll and a follow parked longer than the write timeout must extend
// theirs: both still get their answer.
func TestLongWaitsOutliveTheWriteTimeoutOverHTTP2(t *testing.T) {
	t.Parallel()
	// A lease that outlives the park without heartbeats: a heartbeat
	// could wake the follower, and its write would extend the deadline.
	b := setup(t, withConfig(func(c *app.Config) { c.LeaseTTL, c.Heartbeat = 30*time.Second, 5*time.Second }))
	h2, client := startH2Replica(t, b.DBURL, func(c *app.Config) { c.WriteTimeout = 500 * time.Millisecond })
	waitListeners(t, b.DB, 2)
	hb := b.with(t)
	hb.client = client

	rec := b.submit(b.Alice, b.NodeA.Container, "true")
	r := hb.doAt(h2.URL, http.MethodGet, commandPath(rec.ID)+"?wait=2s", b.Alice.Token, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET ?wait=2s over HTTP/2: %s", r)
	}

	lc := b.leaseCommand(b.NodeA, rec.ID)
	b.start(b.NodeA, lc)
	f := hb.follow(h2.URL, b.Alice, lc.ID, shared.StreamStdout, 0)
	if f.resp.ProtoMajor != 2 {
		t.Fatalf("follow answered over %s, want HTTP/2", f.resp.Proto)
	}
	time.Sleep(2 * time.Second) // parked: the command writes nothing for four write timeouts
	b.heartbeat(b.NodeA, lc, stdout(0, "late\n"))
	f.expect([]byte("late\n"), within)
	b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 5, ExitCode: exitCode(0)}, shared.StatusSucceeded)
	f.expectEnd(shared.StatusSucceeded)
}

// TestLargeReadsBeyondTheQueueAreBusy: with every large-read turn taken and
// no room to wait, a read of a large record is 503 busy with Retry-After,
// and is served once the turn is given back.
func TestLargeReadsBeyondTheQueueAreBusy(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *app.Config) { c.MaxLargeReads, c.MaxLargeReadQueue = 1, 0 }))
	const size = 8 << 20
	out := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	id := b.finishWithOutput(`$1::bytea`, size, out)

	// A client that reads nothing holds the one turn.
	holder := b.dialRaw()
	if tc, ok := holder.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	fmt.Fprintf(holder, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", commandPath(id), b.Alice.Token)
	// Its status line is out once it has the turn; then it reads no more.
	_ = holder.SetReadDeadline(time.Now().Add(within))
	if line, err := bufio.NewReaderSize(holder, 16).ReadString('\n'); err != nil || !strings.Contains(line, " 200 ") {
		t.Fatalf("non-reading client's answer: %q, %v", line, err)
	}
	r := b.do(http.MethodGet, commandPath(id), b.Alice.Token, nil)
	b.with(t).wantError(r, http.StatusServiceUnavailable, "busy")
	if got := r.Header.Get("Retry-After"); got != "1" {
		t.Fatalf("busy answer Retry-After %q, want 1", got)
	}
	// A small record is not a large read: still served.
	small := b.submit(b.Alice, b.NodeA.Container, "true")
	b.get(b.Alice, small.ID)

	holder.Close() // the turn is given back when its write fails
	eventually(t, within, func() bool {
		r = b.do(http.MethodGet, commandPath(id), b.Alice.Token, nil)
		return r.Status == http.StatusOK
	}, "the large record was not served after the turn was given back: %s", &r)
	var rec shared.CommandExecutionRecord
	if err := json.Unmarshal(r.Body, &rec); err != nil || rec.Stdout != string(out) {
		t.Fatalf("large record after the turn came back: %v, stdout of %d bytes, want %d", err, len(rec.Stdout), size)
	}
}
