package app_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/shared"
)

// follower reads GET …/output?follow=true in the background.
type follower struct {
	t      testing.TB
	resp   *http.Response
	cancel context.CancelFunc
	pieces chan []byte // what each read returned, in order
	done   chan struct{}
	err    error // the read error that ended the body (io.EOF normally)
	got    []byte
}

// follow starts following a stream at base from offset and waits for the
// answer's headers: once they are in, the follower has subscribed and read
// once, so anything stored later must reach it.
func (b *bundle) follow(base string, user identity, id, stream string, offset int64) *follower {
	b.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	path := fmt.Sprintf("%s/output?stream=%s&offset=%d&follow=true", commandPath(id), stream, offset)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+user.Token)
	resp, err := b.client.Do(req)
	if err != nil {
		cancel()
		b.t.Fatalf("follow %s: %v", id, err)
	}
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		b.t.Fatalf("follow %s: %d %s", id, resp.StatusCode, raw)
	}
	f := &follower{t: b.t, resp: resp, cancel: cancel, pieces: make(chan []byte, 1<<12), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer close(f.pieces)
		buf := make([]byte, 64<<10)
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				f.pieces <- bytes.Clone(buf[:n])
			}
			if err != nil {
				f.err = err
				return
			}
		}
	}()
	b.t.Cleanup(f.close)
	return f
}

// close drops the connection, as a client that goes away.
func (f *follower) close() {
	f.cancel()
	<-f.done
	f.resp.Body.Close()
}

// expect reads until the follower has received exactly want more bytes,
// failing after bound or on anything else.
func (f *follower) expect(want []byte, bound time.Duration) {
	f.t.Helper()
	var got []byte
	timeout := time.After(bound)
	for len(got) < len(want) {
		select {
		case p, ok := <-f.pieces:
			if !ok {
				f.t.Fatalf("follow ended (%v) after %s, want %s", f.err, preview(got), preview(want))
			}
			got = append(got, p...)
		case <-timeout:
			f.t.Fatalf("follower received %s within %s, want %s", preview(got), bound, preview(want))
		}
	}
	if !bytes.Equal(got, want) {
		f.t.Fatalf("follower received %s, want %s", preview(got), preview(want))
	}
	f.got = append(f.got, got...)
}

// preview shows bytes in a failure message: short ones whole, long ones by
// size and ends.
func preview(b []byte) string {
	if len(b) <= 64 {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("%d bytes %q…%q", len(b), b[:16], b[len(b)-16:])
}

// expectEnd reads the rest of the answer, which must end cleanly with the
// status trailer, and returns everything the follower received.
func (f *follower) expectEnd(status shared.Status) []byte {
	f.t.Helper()
	timeout := time.After(within)
	for {
		select {
		case p, ok := <-f.pieces:
			if !ok {
				if !errors.Is(f.err, io.EOF) {
					f.t.Fatalf("follow ended with %v", f.err)
				}
				if got := f.resp.Trailer.Get("X-Execq-Status"); got != string(status) {
					f.t.Fatalf("trailer X-Execq-Status %q, want %q", got, status)
				}
				return f.got
			}
			f.got = append(f.got, p...)
		case <-timeout:
			f.t.Fatalf("follow still open after %s; received %d bytes", within, len(f.got))
		}
	}
}

// expectNothing checks the follower receives no byte for a moment: the
// command wrote nothing, so a byte would be a repeat.
func (f *follower) expectNothing() {
	f.t.Helper()
	select {
	case p, ok := <-f.pieces:
		f.t.Fatalf("follower received %q (open=%v) while nothing was written", p, ok)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestFollowAcrossReplicas: the agent heartbeats to one replica and the
// follower reads from the other; only NOTIFY links them (the safety poll is
// a minute away), so each line arriving within wakeBound proves the wake-up.
func TestFollowAcrossReplicas(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other := startReplica(t, b.DBURL)
	waitListeners(t, b.DB, 2)

	lc := b.run("/bin/sh", "-c", "for i in 1 2 3 4 5; do echo $i; sleep 1; done")
	f := b.follow(other.URL, b.Alice, lc.ID, shared.StreamStdout, 0)
	// Go's client moves the declared trailer names from the Trailer header
	// to resp.Trailer, with values once the body is read.
	if _, ok := f.resp.Trailer["X-Execq-Status"]; !ok || f.resp.Header.Get("X-Execq-Status") != "" {
		t.Fatalf("trailers %v, header %v: want the status declared as a trailer only", f.resp.Trailer, f.resp.Header)
	}
	if got := f.resp.Header.Get("Content-Type"); got != "application/octet-stream" {
		t.Fatalf("Content-Type %q", got)
	}
	f.expectNothing()
	var off int64
	for i := 1; i <= 5; i++ {
		line := fmt.Sprintf("%d\n", i)
		b.heartbeat(b.NodeA, lc, stdout(off, line))
		off += int64(len(line))
		f.expect([]byte(line), wakeBound)
		if rec := b.get(b.Alice, lc.ID); rec.Status != shared.StatusRunning {
			t.Fatalf("line %d reached the follower with the command %s, want running", i, rec.Status)
		}
	}
	// A retried heartbeat stores nothing new: the follower gets no repeat.
	b.heartbeat(b.NodeA, lc, stdout(0, "1\n"))
	f.expectNothing()
	b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: off, ExitCode: exitCode(0)}, shared.StatusSucceeded)
	got := f.expectEnd(shared.StatusSucceeded)
	if rec := b.get(b.Alice, lc.ID); string(got) != rec.Stdout || rec.Stdout != "1\n2\n3\n4\n5\n" {
		t.Fatalf("follower received %q, record stdout %q", got, rec.Stdout)
	}
}

// TestFollowReconnect: a follower that drops and comes back with the offset
// it reached receives the rest, nothing lost and nothing repeated, whether
// the command is still running or already terminal; stderr's execq note is
// part of the stream.
func TestFollowReconnect(t *testing.T) {
	t.Parallel()
	b := setup(t)
	lc := b.run("/bin/sh", "-c", "work")
	b.heartbeat(b.NodeA, lc, stdout(0, "one\n"), stderr(0, "e1\n"))
	first := b.follow(b.URL, b.Alice, lc.ID, shared.StreamStdout, 0)
	first.expect([]byte("one\n"), wakeBound)
	b.heartbeat(b.NodeA, lc, stdout(4, "two\n"))
	first.expect([]byte("two\n"), wakeBound)
	reached := int64(len(first.got))
	first.close()

	b.heartbeat(b.NodeA, lc, stdout(8, "three\n")) // written while nobody follows
	second := b.follow(b.URL, b.Alice, lc.ID, shared.StreamStdout, reached)
	second.expect([]byte("three\n"), wakeBound)
	errs := b.follow(b.URL, b.Alice, lc.ID, shared.StreamStderr, 1)
	errs.expect([]byte("1\n"), wakeBound)
	b.heartbeat(b.NodeA, lc, stdout(14, "four\n"))
	second.expect([]byte("four\n"), wakeBound)
	r := b.finish(b.NodeA, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 19, StderrLength: 3, Error: "boom"}, lc.ID)
	if r.Status != http.StatusOK {
		t.Fatalf("finish: %s", r)
	}
	rec := b.get(b.Alice, lc.ID)
	if whole := string(first.got) + string(second.expectEnd(shared.StatusFailed)); whole != rec.Stdout {
		t.Fatalf("joined follows %q, record stdout %q", whole, rec.Stdout)
	}
	if got := "e" + string(errs.expectEnd(shared.StatusFailed)); got != rec.Stderr || got != "e1\nexecq: boom\n" {
		t.Fatalf("stderr follow %q, record stderr %q", got, rec.Stderr)
	}

	// Terminal: the rest at once, then the trailer; at the end, only the trailer.
	for _, from := range []int64{0, 9, 19} {
		f := b.follow(b.URL, b.Alice, lc.ID, shared.StreamStdout, from)
		if got := f.expectEnd(shared.StatusFailed); string(got) != rec.Stdout[from:] {
			t.Fatalf("follow of a terminal stream from %d: %q, want %q", from, got, rec.Stdout[from:])
		}
	}
}

// TestFollowLargeStream: a stream larger than the pieces the coordinator
// reads (chunks, pieces and offsets all misaligned) arrives byte-exact, while
// running and once folded into the record.
func TestFollowLargeStream(t *testing.T) {
	t.Parallel()
	b := setup(t)
	data := binaryOutput(7)
	lc := b.run("/usr/bin/dd", "if=/dev/urandom")
	f := b.follow(b.URL, b.Alice, lc.ID, shared.StreamStdout, 0)
	b.sendChunks(b.NodeA, lc, shared.StreamStdout, data[:700_001], 100_003)
	f.expect(data[:700_001], within)
	late := b.follow(b.URL, b.Alice, lc.ID, shared.StreamStdout, 333_333)
	late.expect(data[333_333:700_001], within)
	for off := 700_001; off < len(data); off += 99_999 {
		b.heartbeat(b.NodeA, lc, shared.Chunk{Stream: shared.StreamStdout, Offset: int64(off), Data: data[off:min(off+99_999, len(data))]})
	}
	b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: int64(len(data)), ExitCode: exitCode(0)}, shared.StatusSucceeded)
	if got := f.expectEnd(shared.StatusSucceeded); !bytes.Equal(got, data) {
		t.Fatalf("follower received %d bytes differing from the %d written", len(got), len(data))
	}
	if got := late.expectEnd(shared.StatusSucceeded); !bytes.Equal(got, data[333_333:]) {
		t.Fatalf("late follower received %d bytes, want the last %d", len(got), len(data)-333_333)
	}
	terminal := b.follow(b.URL, b.Alice, lc.ID, shared.StreamStdout, 12_345)
	if got := terminal.expectEnd(shared.StatusSucceeded); !bytes.Equal(got, data[12_345:]) {
		t.Fatalf("follow of the record from 12345: %d bytes, want %d", len(got), len(data)-12_345)
	}
}

// TestFollowersHoldNoConnection parks more followers than the pool has
// connections: a heartbeat still goes through, and wakes every one of them.
func TestFollowersHoldNoConnection(t *testing.T) {
	t.Parallel()
	const conns = 4
	b := setup(t, withConfig(func(c *app.Config) { c.DBMaxConns = conns }))
	lc := b.run("/bin/cat")
	fs := make([]*follower, 3*conns)
	for i := range fs {
		fs[i] = b.follow(b.URL, b.Alice, lc.ID, shared.StreamStdout, 0)
	}
	b.heartbeat(b.NodeA, lc, stdout(0, "hello\n"))
	for _, f := range fs {
		f.expect([]byte("hello\n"), within)
	}
	b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 6, ExitCode: exitCode(0)}, shared.StatusSucceeded)
	for _, f := range fs {
		f.expectEnd(shared.StatusSucceeded)
	}
}

// TestFollowQueuedCommand: a follow may start before the command does; the
// lease, start and output reach it in order, and a reaped command ends it
// with the agent-lost note on stderr.
func TestFollowQueuedCommand(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rec := b.submit(b.Alice, b.NodeA.Container, "/bin/sh", "-c", "work")
	out := b.follow(b.URL, b.Alice, rec.ID, shared.StreamStdout, 0)
	errs := b.follow(b.URL, b.Alice, rec.ID, shared.StreamStderr, 0)
	lc := b.leaseCommand(b.NodeA, rec.ID)
	b.start(b.NodeA, lc)
	b.heartbeat(b.NodeA, lc, stdout(0, "partial"))
	out.expect([]byte("partial"), wakeBound)
	// The agent goes silent: the reaper fails the command, which ends both
	// follows with what the record holds.
	if got := out.expectEnd(shared.StatusFailed); string(got) != "partial" {
		t.Fatalf("stdout follow %q", got)
	}
	final := b.get(b.Alice, rec.ID)
	if got := errs.expectEnd(shared.StatusFailed); string(got) != final.Stderr || len(got) == 0 {
		t.Fatalf("stderr follow %q, record %q", got, final.Stderr)
	}
}

// TestOutputOffset reads without follow from an offset: the bytes stored
// now, with the status as a header and an exact Content-Length.
func TestOutputOffset(t *testing.T) {
	t.Parallel()
	b := setup(t)
	lc := b.run("/bin/sh", "-c", "work")
	b.heartbeat(b.NodeA, lc, stdout(0, "hello "), stdout(6, "world\n"))
	read := func(q string) response {
		t.Helper()
		return b.do(http.MethodGet, commandPath(lc.ID)+"/output?"+q, b.Alice.Token, nil)
	}
	for _, c := range []struct {
		q, want, status string
	}{
		{"offset=0", "hello world\n", "running"},
		{"offset=3", "lo world\n", "running"},
		{"offset=8&follow=false", "rld\n", "running"},
		{"offset=12", "", "running"},
		{"offset=500", "", "running"}, // not yet written: nothing now
	} {
		r := read(c.q)
		if r.Status != http.StatusOK || string(r.Body) != c.want || r.Header.Get("X-Execq-Status") != c.status ||
			r.Header.Get("Content-Length") != fmt.Sprint(len(c.want)) {
			t.Fatalf("?%s: %s %q (%v), want %q %s", c.q, r, r.Body, r.Header, c.want, c.status)
		}
	}
	b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 12, ExitCode: exitCode(0)}, shared.StatusSucceeded)
	if r := read("offset=6"); r.Status != http.StatusOK || string(r.Body) != "world\n" || r.Header.Get("X-Execq-Status") != "succeeded" {
		t.Fatalf("terminal ?offset=6: %s %v", r, r.Header)
	}
	if r := read("offset=12"); r.Status != http.StatusOK || len(r.Body) != 0 {
		t.Fatalf("terminal ?offset=12 (the end): %s", r)
	}
	before := b.snapshot()
	b.wantError(read("offset=13"), http.StatusBadRequest, "invalid_field")
	b.wantError(read("offset=13&follow=true"), http.StatusBadRequest, "invalid_field")
	if b.snapshot() != before {
		t.Fatal("a refused read changed the database")
	}
}

// TestOutputParamsValidation: malformed parameters are a 400 JSON error,
// with or without follow; another user's command is a 404 as for reads.
func TestOutputParamsValidation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	lc := b.run("/bin/true")
	for _, q := range []string{
		"offset=-1", "offset=abc", "offset=1.5", "offset=0x10", "offset=99999999999999999999", "offset=",
		"offset=-1&follow=true", "follow=maybe", "follow=yes", "follow=2", "follow=true&offset=x",
	} {
		r := b.do(http.MethodGet, commandPath(lc.ID)+"/output?"+q, b.Alice.Token, nil)
		if q == "offset=" { // empty means the default, like an absent parameter
			if r.Status != http.StatusOK {
				t.Fatalf("?%s: %s", q, r)
			}
			continue
		}
		b.with(t).wantError(r, http.StatusBadRequest, "invalid_field")
	}
	b.wantError(b.do(http.MethodGet, commandPath(lc.ID)+"/output?follow=true&stream=both", b.Alice.Token, nil), http.StatusBadRequest, "invalid_stream")
	b.wantError(b.do(http.MethodGet, commandPath(lc.ID)+"/output?follow=true", b.Bob.Token, nil), http.StatusNotFound, "not_found")
}

// expectCut reads the rest of an answer that must end without the status
// trailer: incomplete, to be resumed from the offset reached.
func (f *follower) expectCut() []byte {
	f.t.Helper()
	timeout := time.After(within)
	for {
		select {
		case p, ok := <-f.pieces:
			if !ok {
				if got := f.resp.Trailer.Get("X-Execq-Status"); got != "" {
					f.t.Fatalf("cut-off follow carries the trailer %q", got)
				}
				return f.got
			}
			f.got = append(f.got, p...)
		case <-timeout:
			f.t.Fatalf("follow still open after %s", within)
		}
	}
}

// TestFollowEndsAtShutdown: a stopping replica ends its follows at once,
// without the trailer, instead of holding its shutdown for the commands'
// lifetime; the client resumes on another replica from the offset reached.
func TestFollowEndsAtShutdown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := testConfig(b.DBURL)
	cfg.Listen = freeListenAddr(t)
	cfg.ShutdownGrace = 5 * time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := app.New(ctx, cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	base := "http://" + cfg.Listen
	eventually(t, within, func() bool {
		r, err := b.request(context.Background(), base, http.MethodGet, "/readyz", "", nil)
		return err == nil && r.Status == http.StatusOK
	}, "replica on %s never ready", base)

	lc := b.run("/bin/sh", "-c", "work")
	b.heartbeat(b.NodeA, lc, stdout(0, "before\n"))
	f := b.follow(base, b.Alice, lc.ID, shared.StreamStdout, 0)
	f.expect([]byte("before\n"), wakeBound)
	cancel()
	if got := f.expectCut(); string(got) != "before\n" {
		t.Fatalf("cut-off follow received %q", got)
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(within):
		t.Fatal("the replica's shutdown waited for its follower")
	}
	b.heartbeat(b.NodeA, lc, stdout(7, "after\n"))
	resumed := b.follow(b.URL, b.Alice, lc.ID, shared.StreamStdout, int64(len(f.got)))
	resumed.expect([]byte("after\n"), wakeBound)
}

// freeListenAddr returns a loopback address with a port free right now.
func freeListenAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
