package worker

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/execq/execq/shared"
)

func TestOutputChunksFromAcknowledgedOffsets(t *testing.T) {
	o := newOutput(1<<20, 1<<20, 0, nil)
	o.writer(stdout).Write([]byte("hello "))
	o.writer(stderr).Write([]byte("oops"))
	o.writer(stdout).Write([]byte("world"))

	chunks, rest := o.pending(1 << 10)
	if rest != 0 || len(chunks) != 2 || string(chunks[0].Data) != "hello world" || chunks[0].Offset != 0 || chunks[1].Stream != shared.StreamStderr {
		t.Fatalf("chunks %+v rest %d", chunks, rest)
	}
	// Partly acknowledged: the next chunk starts where the coordinator is.
	if err := o.ack(shared.Offsets{Stdout: 6, Stderr: 4}); err != nil {
		t.Fatal(err)
	}
	chunks, _ = o.pending(1 << 10)
	if len(chunks) != 1 || chunks[0].Offset != 6 || string(chunks[0].Data) != "world" {
		t.Fatalf("after ack: %+v", chunks)
	}
	// A late answer with lower offsets changes nothing.
	if err := o.ack(shared.Offsets{Stdout: 2, Stderr: 0}); err != nil {
		t.Fatal(err)
	}
	if chunks, _ = o.pending(1 << 10); chunks[0].Offset != 6 {
		t.Fatalf("stale ack moved the offset: %+v", chunks)
	}
	if so, se := o.totals(); so != 11 || se != 4 {
		t.Fatalf("totals %d %d", so, se)
	}
	// A gap at or past the acknowledged end is resent from there; below it,
	// the bytes are gone.
	if err := o.resendFrom(shared.Offsets{Stdout: 8, Stderr: 4}); err != nil {
		t.Fatal(err)
	}
	if chunks, _ = o.pending(1 << 10); string(chunks[0].Data) != "rld" || chunks[0].Offset != 8 {
		t.Fatalf("after gap: %+v", chunks)
	}
	if err := o.resendFrom(shared.Offsets{Stdout: 0, Stderr: 4}); err != errOutputLost {
		t.Fatalf("resend below the acknowledged end: %v", err)
	}
	// Acknowledging more than was captured is reported and clamped.
	if err := o.ack(shared.Offsets{Stdout: 100, Stderr: 4}); err == nil {
		t.Fatal("over-acknowledgement not reported")
	}
	if o.pendingBytes() != 0 {
		t.Fatalf("pending %d", o.pendingBytes())
	}
}

func TestOutputChunkSizeSharedFairly(t *testing.T) {
	o := newOutput(1<<20, 1<<20, 0, nil)
	o.writer(stdout).Write(bytes.Repeat([]byte("o"), 1000))
	o.writer(stderr).Write(bytes.Repeat([]byte("e"), 1000))
	chunks, rest := o.pending(300)
	if len(chunks) != 2 || len(chunks[0].Data) != 150 || len(chunks[1].Data) != 150 || rest != 1700 {
		t.Fatalf("both streams busy: %d+%d, rest %d", len(chunks[0].Data), len(chunks[1].Data), rest)
	}
	o.ack(shared.Offsets{Stdout: 0, Stderr: 950})
	chunks, _ = o.pending(300)
	if len(chunks[0].Data) != 250 || len(chunks[1].Data) != 50 {
		t.Fatalf("stderr nearly done, stdout gets the rest: %d+%d", len(chunks[0].Data), len(chunks[1].Data))
	}
}

func TestOutputBackPressureAndAbandon(t *testing.T) {
	o := newOutput(10, 10, 0, nil)
	w := o.writer(stdout)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Write([]byte("0123456789abcdef")) // 16 bytes into 10
	}()
	select {
	case <-done:
		t.Fatal("write past the bound did not block")
	case <-o.ready:
	case <-time.After(time.Second):
		t.Fatal("a blocked writer did not signal ready")
	}
	o.ack(shared.Offsets{Stdout: 10})
	<-done
	chunks, _ := o.pending(100)
	if string(chunks[0].Data) != "abcdef" || chunks[0].Offset != 10 {
		t.Fatalf("after unblocking: %+v", chunks)
	}

	// A writer blocked on a full buffer is released by abandon.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.Write(bytes.Repeat([]byte("x"), 100))
	}()
	time.Sleep(50 * time.Millisecond)
	o.abandon()
	wg.Wait()
	if n, _ := w.Write([]byte("more")); n != 4 || o.pendingBytes() != 0 {
		t.Fatal("abandoned output must accept and drop")
	}
}

func TestFinishErrorIsSafe(t *testing.T) {
	long := strings.Repeat("é", 3000) // 6000 bytes
	got := finishError("a\x00b" + long + "\xff")
	if len(got) > shared.MaxFinishErrorBytes || !utf8.ValidString(got) || strings.Contains(got, "\x00") || !strings.HasPrefix(got, "abé") {
		t.Fatalf("finishError: %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
	if finishError("short") != "short" {
		t.Fatal("short message changed")
	}
}

// Past the coordinator's cap (plus the byte that marks truncation) bytes are
// counted and dropped, without blocking the writer on a full buffer.
func TestOutputDropsPastSendLimit(t *testing.T) {
	o := newOutput(8, 8, 5, nil)
	o.writer(stdout).Write([]byte("0123"))
	o.writer(stdout).Write([]byte("456789")) // past the limit: never blocks
	o.writer(stderr).Write([]byte("ab"))
	chunks, rest := o.pending(100)
	if rest != 0 || len(chunks) != 2 || string(chunks[0].Data) != "01234" || string(chunks[1].Data) != "ab" {
		t.Fatalf("chunks %+v rest %d", chunks, rest)
	}
	o.ack(shared.Offsets{Stdout: 5, Stderr: 2})
	o.writer(stdout).Write([]byte("more"))
	if so, se := o.totals(); so != 5 || se != 2 || o.dropped() != 9 || o.pendingBytes() != 0 {
		t.Fatalf("totals %d %d dropped %d pending %d; want 5 2 9 0", so, se, o.dropped(), o.pendingBytes())
	}
}

// Much more output than the limit, written in odd sizes and acknowledged in
// odd steps, comes out exact and in order, while the blocks ever allocated
// stay within the limit plus two per stream (its first block partly
// acknowledged, its last partly filled).
func TestOutputBlocksStayWithinLimit(t *testing.T) {
	const limit = 4 * blockSize
	o := newOutput(limit, limit, 0, nil)
	var want [2][]byte
	for i := range 2 {
		want[i] = make([]byte, 40*blockSize+12345)
		for j := range want[i] {
			want[i][j] = byte(j*7 + i)
		}
	}
	for i := range 2 {
		go func() {
			w, data := o.writer(i), want[i]
			for step := 1; len(data) > 0; step = step*31%4093 + 1 {
				k := min(step, len(data))
				w.Write(data[:k])
				data = data[k:]
			}
		}()
	}
	var got [2][]byte
	for step := 0; len(got[0]) < len(want[0]) || len(got[1]) < len(want[1]); step++ {
		chunks, _ := o.pending(3*blockSize/2 + step%1000)
		var off shared.Offsets
		off.Stdout, off.Stderr = int64(len(got[0])), int64(len(got[1]))
		for _, c := range chunks {
			i := 0
			if c.Stream == shared.StreamStderr {
				i = 1
			}
			if c.Offset != int64(len(got[i])) {
				t.Fatalf("%s chunk at %d, want %d", c.Stream, c.Offset, len(got[i]))
			}
			// Acknowledge a part only, as a coordinator that stored less.
			take := len(c.Data) - step%3
			got[i] = append(got[i], c.Data[:max(take, 0)]...)
		}
		off.Stdout, off.Stderr = int64(len(got[0])), int64(len(got[1]))
		if err := o.ack(off); err != nil {
			t.Fatal(err)
		}
		if len(chunks) == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	for i := range 2 {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s differs after passing through the blocks", streamNames[i])
		}
	}
	if max := limit/blockSize + 4; o.allocated > max {
		t.Fatalf("%d blocks allocated for a %d-block limit, want at most %d", o.allocated, limit/blockSize, max)
	}
}

// Past the head (sendLimit) the last tail bytes are kept and the rest
// counted; once sealed, the tail goes out after the head at its true offset,
// its first chunk marked Skip, and the totals are the true lengths.
func TestOutputKeepsHeadAndTail(t *testing.T) {
	o := newOutput(1<<20, 1<<20, 5, nil)
	o.tail = 4
	for _, p := range []string{"012", "3456", "789abc", "de", "f"} {
		o.writer(stdout).Write([]byte(p))
	}
	o.writer(stderr).Write([]byte("xy"))
	chunks, rest := o.pending(100)
	if rest != 0 || len(chunks) != 2 || string(chunks[0].Data) != "01234" || chunks[0].Skip || string(chunks[1].Data) != "xy" {
		t.Fatalf("before seal: %+v rest %d", chunks, rest)
	}
	if o.dropped() != 7 {
		t.Fatalf("dropped %d, want 7 (16 written, 5 head, 4 tail)", o.dropped())
	}
	o.seal()
	// The head is not acknowledged yet: it goes first, alone.
	chunks, rest = o.pending(100)
	if len(chunks) != 2 || string(chunks[0].Data) != "01234" || chunks[0].Offset != 0 || chunks[0].Skip || rest != 4 {
		t.Fatalf("head after seal: %+v rest %d", chunks, rest)
	}
	if err := o.ack(shared.Offsets{Stdout: 5, Stderr: 2}); err != nil {
		t.Fatal(err)
	}
	chunks, _ = o.pending(100)
	if len(chunks) != 1 || string(chunks[0].Data) != "cdef" || chunks[0].Offset != 12 || !chunks[0].Skip {
		t.Fatalf("tail: %+v", chunks)
	}
	if so, se := o.totals(); so != 16 || se != 2 {
		t.Fatalf("totals %d %d, want the true lengths 16 2", so, se)
	}
	// Part of the tail acknowledged (in stream offsets), a gap back to the
	// head's end resends the tail from its start.
	if err := o.ack(shared.Offsets{Stdout: 14, Stderr: 2}); err != nil {
		t.Fatal(err)
	}
	if chunks, _ = o.pending(100); string(chunks[0].Data) != "ef" || chunks[0].Offset != 14 || chunks[0].Skip {
		t.Fatalf("rest of the tail: %+v", chunks)
	}
	if err := o.resendFrom(shared.Offsets{Stdout: 5, Stderr: 2}); err != errOutputLost {
		t.Fatalf("resend below the acknowledged end: %v", err)
	}
	if err := o.ack(shared.Offsets{Stdout: 16, Stderr: 2}); err != nil || o.pendingBytes() != 0 {
		t.Fatalf("all acknowledged: %v, %d pending", err, o.pendingBytes())
	}
}

// A stream that passes the head but stays within head+tail is sent whole:
// its tail follows the head contiguously, with no skip.
func TestOutputWithinCapSentWhole(t *testing.T) {
	o := newOutput(1<<20, 1<<20, 5, nil)
	o.tail = 4
	o.writer(stdout).Write([]byte("01234567"))
	o.ack(shared.Offsets{Stdout: 5})
	o.seal()
	chunks, _ := o.pending(100)
	if len(chunks) != 1 || string(chunks[0].Data) != "567" || chunks[0].Offset != 5 || chunks[0].Skip || o.dropped() != 0 {
		t.Fatalf("chunks %+v dropped %d", chunks, o.dropped())
	}
	if so, _ := o.totals(); so != 8 {
		t.Fatalf("total %d", so)
	}
}

// The ring holds the tail in blocks: much more output than the tail, in odd
// sizes, leaves exactly its last tail bytes, with memory near the tail.
func TestOutputTailRingBounded(t *testing.T) {
	const head, tail = 1000, 3*blockSize + 123
	o := newOutput(1<<20, 1<<20, head, nil)
	o.tail = tail
	var all []byte
	for i := 0; len(all) < 40*blockSize; i++ {
		p := bytes.Repeat([]byte{byte(i)}, 1+i*7919%20000)
		all = append(all, p...)
		o.writer(stdout).Write(p)
	}
	if o.allocated > tail/blockSize+3 {
		t.Fatalf("%d blocks allocated for a %d-byte tail", o.allocated, tail)
	}
	o.ack(shared.Offsets{Stdout: head})
	o.seal()
	var got []byte
	for o.pendingBytes() > 0 {
		chunks, _ := o.pending(50_000)
		if len(got) == 0 && (!chunks[0].Skip || chunks[0].Offset != int64(len(all)-tail)) {
			t.Fatalf("first tail chunk at %d skip %v, want %d", chunks[0].Offset, chunks[0].Skip, len(all)-tail)
		}
		got = append(got, chunks[0].Data...)
		o.ack(shared.Offsets{Stdout: chunks[0].Offset + int64(len(chunks[0].Data))})
	}
	if !bytes.Equal(got, all[len(all)-tail:]) {
		t.Fatalf("tail of %d bytes differs from the last %d written", len(got), tail)
	}
	if so, _ := o.totals(); so != int64(len(all)) || o.dropped() != int64(len(all)-head-tail) {
		t.Fatalf("total %d dropped %d", so, o.dropped())
	}
}
