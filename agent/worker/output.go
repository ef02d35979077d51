package worker

import (
	"errors"
	"fmt"
	"sync"

	"github.com/execq/execq/shared"
)

// Stream indexes.
const (
	stdout = 0
	stderr = 1
)

var streamNames = [2]string{shared.StreamStdout, shared.StreamStderr}

// errOutputLost means the coordinator asked for bytes it had already
// acknowledged: they were dropped from the buffer and cannot be resent.
var errOutputLost = errors.New("coordinator asked to resend output it had acknowledged")

// output buffers one command's captured bytes from the coordinator's
// acknowledged offset on. Bytes are dropped only once acknowledged, so any
// request can be repeated from the acknowledged offsets: the coordinator
// ignores what it already has and nothing is appended twice or lost.
//
// Past sendLimit bytes of a stream (the coordinator's output cap plus the
// one byte that tells it the stream was truncated) bytes are counted and
// dropped at once: the coordinator would only throw them away.
//
// It is bounded: when limit bytes are waiting for acknowledgement, writes
// block — and so does the program, on its pipe — until an acknowledgement
// frees room. That is the back-pressure that keeps a coordinator outage from
// costing either memory or bytes.
type output struct {
	mu        sync.Mutex
	room      *sync.Cond // signalled when bytes are acknowledged or abandoned
	limit     int64
	sendLimit int64 // bytes per stream worth sending; 0: all
	streams   [2]streamBuf
	buffered  int64 // len(streams[0].data) + len(streams[1].data)
	abandoned bool
	// onWrite is told how many bytes each stream captured (metrics).
	onWrite func(stream int, n int)
	// ready is signalled when a full chunk is waiting, or a writer is
	// about to block: the sender should not wait for its next tick.
	ready     chan struct{}
	readyMark int64
}

type streamBuf struct {
	base    int64  // acknowledged end: data[0] is the byte at this offset
	data    []byte // captured, not yet acknowledged
	dropped int64  // captured past sendLimit: counted, never sent
}

// newOutput returns a buffer of limit bytes that signals ready once
// readyMark bytes wait, and keeps at most sendLimit bytes of each stream
// (0: no such limit).
func newOutput(limit, readyMark, sendLimit int64, onWrite func(stream, n int)) *output {
	o := &output{limit: limit, sendLimit: sendLimit, onWrite: onWrite, ready: make(chan struct{}, 1), readyMark: min(readyMark, limit)}
	o.room = sync.NewCond(&o.mu)
	return o
}

// writer returns the io.Writer the runner copies stream into.
func (o *output) writer(stream int) *streamWriter { return &streamWriter{o: o, stream: stream} }

type streamWriter struct {
	o      *output
	stream int
}

// Write appends p, blocking while the buffer is full. After abandon it
// accepts and drops everything, so a program being stopped is never stuck
// on a full pipe.
func (w *streamWriter) Write(p []byte) (int, error) {
	o := w.o
	n := len(p)
	if o.onWrite != nil {
		o.onWrite(w.stream, n)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if s := &o.streams[w.stream]; o.sendLimit > 0 {
		room := max(o.sendLimit-s.base-int64(len(s.data)), 0)
		if int64(len(p)) > room {
			s.dropped += int64(len(p)) - room
			p = p[:room]
		}
	}
	for len(p) > 0 {
		for !o.abandoned && o.buffered >= o.limit {
			o.signalReady()
			o.room.Wait()
		}
		if o.abandoned {
			return n, nil
		}
		k := min(int64(len(p)), o.limit-o.buffered)
		s := &o.streams[w.stream]
		s.data = append(s.data, p[:k]...)
		o.buffered += k
		p = p[k:]
	}
	if o.buffered >= o.readyMark {
		o.signalReady()
	}
	return n, nil
}

func (o *output) signalReady() {
	select {
	case o.ready <- struct{}{}:
	default:
	}
}

// pending returns chunks of at most maxBytes in all, starting at the
// acknowledged offsets, and how many buffered bytes did not fit. The two
// streams share maxBytes evenly when both have more than their half, so a
// chatty stdout cannot starve stderr. The chunks' Data alias the buffer; it
// is never written in place, so they stay valid.
func (o *output) pending(maxBytes int) (chunks []shared.Chunk, rest int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	a, b := len(o.streams[stdout].data), len(o.streams[stderr].data)
	takeB := min(b, max(maxBytes/2, maxBytes-a))
	takeA := min(a, maxBytes-takeB)
	for i, take := range [2]int{takeA, takeB} {
		if take == 0 {
			continue
		}
		s := &o.streams[i]
		chunks = append(chunks, shared.Chunk{Stream: streamNames[i], Offset: s.base, Data: s.data[:take:take]})
	}
	return chunks, int64(a + b - takeA - takeB)
}

// buffered reports the bytes waiting for acknowledgement.
func (o *output) pendingBytes() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buffered
}

// ack drops what the coordinator says it stores. Offsets only move forward:
// an answer to an older request that arrives late carries lower offsets and
// changes nothing. An offset past what was captured is clamped and reported.
func (o *output) ack(off shared.Offsets) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	var err error
	for i, end := range [2]int64{off.Stdout, off.Stderr} {
		s := &o.streams[i]
		if end <= s.base {
			continue
		}
		n := end - s.base
		if n > int64(len(s.data)) {
			err = fmt.Errorf("coordinator acknowledged %s up to %d, but only %d bytes were captured", streamNames[i], end, s.base+int64(len(s.data)))
			n = int64(len(s.data))
		}
		s.base += n
		s.data = s.data[n:]
		if len(s.data) == 0 {
			s.data = nil // let the backing array go
		}
		o.buffered -= n
	}
	o.room.Broadcast()
	return err
}

// resendFrom handles an output_gap answer: the coordinator's stored end is
// off. Bytes from there on are still buffered unless the coordinator went
// back on an acknowledgement, which is errOutputLost.
func (o *output) resendFrom(off shared.Offsets) error {
	o.mu.Lock()
	lost := off.Stdout < o.streams[stdout].base || off.Stderr < o.streams[stderr].base
	o.mu.Unlock()
	if lost {
		return errOutputLost
	}
	return o.ack(off)
}

// ackedBytes is the total the coordinator has acknowledged, both streams:
// it grows whenever a request made progress.
func (o *output) ackedBytes() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.streams[stdout].base + o.streams[stderr].base
}

// dropped is the bytes captured past the send limit, both streams.
func (o *output) dropped() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.streams[stdout].dropped + o.streams[stderr].dropped
}

// totals are the bytes kept per stream: the lengths finish reports, which
// leave out what was dropped past the send limit.
func (o *output) totals() (int64, int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.streams[stdout].base + int64(len(o.streams[stdout].data)),
		o.streams[stderr].base + int64(len(o.streams[stderr].data))
}

// abandon drops everything and makes further writes no-ops: the command is
// no longer ours to report.
func (o *output) abandon() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.abandoned = true
	for i := range o.streams {
		o.streams[i].data = nil
	}
	o.buffered = 0
	o.room.Broadcast()
}
