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

// blockSize is the unit output is buffered in.
const blockSize = 64 << 10

// errOutputLost means the coordinator asked for bytes it had already
// acknowledged: they were dropped from the buffer and cannot be resent.
var errOutputLost = errors.New("coordinator asked to resend output it had acknowledged")

// output buffers one command's captured bytes from the coordinator's
// acknowledged offset on. Bytes are dropped only once acknowledged, so any
// request can be repeated from the acknowledged offsets: the coordinator
// ignores what it already has and nothing is appended twice or lost.
//
// Past sendLimit bytes of a stream (the head the coordinator keeps) bytes
// are not sent as they come: the last tail of them are kept in a ring and
// the rest counted and dropped. When the program has ended, seal puts the
// ring behind the head, and its first chunk goes out at its true offset
// marked Skip: the coordinator keeps the head and the tail and counts the
// middle. With no tail (a coordinator that does not keep one) the bytes
// past sendLimit are only counted.
//
// It is bounded: when limit bytes are waiting for acknowledgement, writes
// block — and so does the program, on its pipe — until an acknowledgement
// frees room. That is the back-pressure that keeps a coordinator outage from
// costing either memory or bytes.
//
// The bytes live in fixed-size blocks that are filled once, dropped whole
// when acknowledged and reused, so the memory held stays within limit plus
// two blocks per stream and one chunk of scratch however much output passes
// through. (A single growing slice, trimmed at the front on every
// acknowledgement, reallocated and copied on every refill and kept several
// generations of itself alive: hundreds of MiB for a 64 MiB limit.)
type output struct {
	mu        sync.Mutex
	room      *sync.Cond // signalled when bytes are acknowledged or abandoned
	limit     int64
	sendLimit int64 // bytes per stream sent as they come (the head); 0: all
	tail      int64 // bytes per stream kept past the head, sent at the end
	block     int   // size of a block: blockSize, or limit if smaller
	streams   [2]streamBuf
	buffered  int64    // bytes in both streams
	free      [][]byte // acknowledged blocks, ready for reuse
	allocated int      // blocks ever made (tests check the bound)
	scratch   []byte   // the chunks pending returns are copied into
	abandoned bool
	// onWrite is told how many bytes each stream captured (metrics).
	onWrite func(stream int, n int)
	// ready is signalled when a full chunk is waiting, or a writer is
	// about to block: the sender should not wait for its next tick.
	ready     chan struct{}
	readyMark int64
}

// blockList holds bytes in blocks: blocks[0][head:], then the others whole.
type blockList struct {
	blocks [][]byte
	head   int
	n      int64 // bytes held
}

type streamBuf struct {
	// base is the acknowledged end: the first buffered byte is at this
	// position of the bytes sent (head, then tail). Positions equal offsets
	// in the stream up to skipAt; past it they are skip bytes behind.
	base int64
	blockList
	// ring keeps the last tail bytes captured past the head until seal.
	ring    blockList
	dropped int64 // captured past the head and not kept: counted, never sent
	// skipAt and skip, set by seal: the tail sent follows the head
	// (position skipAt) but starts skip bytes further in the stream.
	skipAt, skip int64
}

// offset is the stream offset of position pos of the bytes sent.
func (s *streamBuf) offset(pos int64) int64 {
	if s.skip > 0 && pos >= s.skipAt {
		return pos + s.skip
	}
	return pos
}

// position is the inverse of offset for an offset the coordinator reports
// (never inside the skipped middle: it stores nothing there).
func (s *streamBuf) position(off int64) int64 {
	switch {
	case s.skip == 0 || off <= s.skipAt:
		return off
	case off < s.skipAt+s.skip:
		return s.skipAt
	}
	return off - s.skip
}

// newOutput returns a buffer of limit bytes that signals ready once
// readyMark bytes wait, and keeps at most sendLimit bytes of each stream
// (0: no such limit).
func newOutput(limit, readyMark, sendLimit int64, onWrite func(stream, n int)) *output {
	o := &output{
		limit: limit, sendLimit: sendLimit, block: int(min(blockSize, limit)),
		onWrite: onWrite, ready: make(chan struct{}, 1), readyMark: min(readyMark, limit),
	}
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
	s := &o.streams[w.stream]
	if o.sendLimit > 0 && !o.abandoned {
		room := max(o.sendLimit-s.base-s.n, 0)
		if int64(len(p)) > room {
			o.keepTail(s, p[room:])
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
		o.append(s, p[:k])
		p = p[k:]
	}
	if o.buffered >= o.readyMark {
		o.signalReady()
	}
	return n, nil
}

// append copies p into s's blocks, taking new ones as the last fills up.
func (o *output) append(s *streamBuf, p []byte) {
	o.buffered += int64(len(p))
	o.push(&s.blockList, p)
}

// push copies p to the end of l, taking new blocks as the last fills up.
func (o *output) push(l *blockList, p []byte) {
	l.n += int64(len(p))
	for len(p) > 0 {
		last := len(l.blocks) - 1
		if last < 0 || len(l.blocks[last]) == cap(l.blocks[last]) {
			l.blocks = append(l.blocks, o.newBlock())
			last++
		}
		b := l.blocks[last]
		k := copy(b[len(b):cap(b)], p)
		l.blocks[last] = b[:len(b)+k]
		p = p[k:]
	}
}

// keepTail puts bytes captured past the head into s's ring, which keeps
// the last o.tail of them; what falls out of it is counted as dropped.
// The ring is not buffered output (nothing acknowledges it before seal), so
// it never blocks the writer: its memory is o.tail per stream at most, plus
// a block.
func (o *output) keepTail(s *streamBuf, p []byte) {
	if over := int64(len(p)) - o.tail; over > 0 {
		s.dropped += over
		p = p[over:]
	}
	o.push(&s.ring, p)
	if over := s.ring.n - o.tail; over > 0 {
		s.dropped += over
		o.pop(&s.ring, over)
	}
}

// seal puts each stream's ring behind its head, once the program has ended
// and nothing more will be written: the tail is then sent like any output,
// its first chunk at its true offset and marked Skip when bytes between the
// head and it were dropped.
func (o *output) seal() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := range o.streams {
		s := &o.streams[i]
		if s.ring.n == 0 {
			continue
		}
		s.skipAt, s.skip = s.base+s.n, s.dropped
		// Move the ring's blocks rather than copy them: the first is
		// trimmed to where the ring starts; appending behind a partly
		// filled block is fine, reading and dropping go by each block's
		// length.
		ring := s.ring.blocks
		ring[0] = ring[0][s.ring.head:]
		s.blocks = append(s.blocks, ring...)
		s.n += s.ring.n
		o.buffered += s.ring.n
		s.ring = blockList{}
	}
	o.signalReady()
}

func (o *output) newBlock() []byte {
	if n := len(o.free); n > 0 {
		b := o.free[n-1]
		o.free = o.free[:n-1]
		return b
	}
	o.allocated++
	return make([]byte, 0, o.block)
}

// discard drops the first n buffered bytes of s, recycling emptied blocks.
func (o *output) discard(s *streamBuf, n int64) {
	s.base += n
	o.buffered -= n
	o.pop(&s.blockList, n)
}

// pop drops the first n bytes of l, recycling emptied blocks.
func (o *output) pop(l *blockList, n int64) {
	l.n -= n
	for n > 0 {
		b := l.blocks[0]
		avail := int64(len(b) - l.head)
		if n < avail {
			l.head += int(n)
			return
		}
		n -= avail
		l.blocks[0] = nil
		l.blocks = l.blocks[1:]
		l.head = 0
		if cap(b) == o.block {
			o.free = append(o.free, b[:0])
		}
	}
	if len(l.blocks) == 0 {
		l.blocks = nil // let the array of block headers go
	}
}

// copyOut copies the first len(dst) bytes of l into dst.
func (l *blockList) copyOut(dst []byte) {
	head := l.head
	for _, b := range l.blocks {
		if len(dst) == 0 {
			return
		}
		k := copy(dst, b[head:])
		dst = dst[k:]
		head = 0
	}
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
// chatty stdout cannot starve stderr. The chunks' Data is a copy in a
// scratch buffer that the next call to pending overwrites: one request is
// built at a time (by the sender, then by finish), and the client encodes
// it before it returns.
func (o *output) pending(maxBytes int) (chunks []shared.Chunk, rest int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	a, b := int(min(o.streams[stdout].sendable(), int64(maxBytes))), int(min(o.streams[stderr].sendable(), int64(maxBytes)))
	takeB := min(b, max(maxBytes/2, maxBytes-a))
	takeA := min(a, maxBytes-takeB)
	if len(o.scratch) < takeA+takeB {
		o.scratch = make([]byte, maxBytes)
	}
	at := 0
	for i, take := range [2]int{takeA, takeB} {
		if take == 0 {
			continue
		}
		s := &o.streams[i]
		data := o.scratch[at : at+take : at+take]
		s.copyOut(data)
		at += take
		chunks = append(chunks, shared.Chunk{Stream: streamNames[i], Offset: s.offset(s.base), Data: data,
			Skip: s.skip > 0 && s.base == s.skipAt})
	}
	return chunks, o.buffered - int64(takeA+takeB)
}

// sendable is how many buffered bytes of s one chunk may carry: a chunk
// never spans the skipped middle, since its bytes are contiguous.
func (s *streamBuf) sendable() int64 {
	if s.skip > 0 && s.base < s.skipAt {
		return min(s.n, s.skipAt-s.base)
	}
	return s.n
}

// pendingBytes reports the bytes waiting for acknowledgement.
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
	for i, off := range [2]int64{off.Stdout, off.Stderr} {
		s := &o.streams[i]
		end := s.position(off)
		if end <= s.base {
			continue
		}
		n := end - s.base
		if n > s.n {
			err = fmt.Errorf("coordinator acknowledged %s up to %d, but only %d bytes were captured", streamNames[i], off, s.offset(s.base+s.n))
			n = s.n
		}
		o.discard(s, n)
	}
	o.room.Broadcast()
	return err
}

// resendFrom handles an output_gap answer: the coordinator's stored end is
// off. Bytes from there on are still buffered unless the coordinator went
// back on an acknowledgement, which is errOutputLost.
func (o *output) resendFrom(off shared.Offsets) error {
	o.mu.Lock()
	lost := o.streams[stdout].position(off.Stdout) < o.streams[stdout].base ||
		o.streams[stderr].position(off.Stderr) < o.streams[stderr].base
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

// totals are the lengths finish reports: the stream offset the sent bytes
// end at. After seal that is every byte the program wrote, the skipped
// middle included; without a tail it leaves out what was dropped past the
// send limit (the coordinator did not ask for it).
func (o *output) totals() (int64, int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	so, se := &o.streams[stdout], &o.streams[stderr]
	return so.offset(so.base + so.n), se.offset(se.base + se.n)
}

// abandon drops everything and makes further writes no-ops: the command is
// no longer ours to report.
func (o *output) abandon() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.abandoned = true
	for i := range o.streams {
		s := &o.streams[i]
		s.blockList, s.ring = blockList{}, blockList{}
	}
	o.free, o.scratch = nil, nil
	o.buffered = 0
	o.room.Broadcast()
}
