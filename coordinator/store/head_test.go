package store

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/uuid"
)

// TestGetHead: a record is sent from its head, the sizes of its stored
// streams read without them, and slices read with ReadOutput; put together
// the slices are the stored bytes exactly, compressed in TOAST or not.
func TestGetHead(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c := f.running()
	// Compressible (PostgreSQL compresses it in TOAST) and binary.
	out := bytes.Repeat([]byte("line\x00\xff\n"), 300000)
	errOut := []byte("stderr é")
	f.exec(`UPDATE commands SET status = 'succeeded', stdout = $2, stderr = $3 WHERE id = $1`, c.ID, out, errOut)

	h, err := f.st.GetHead(f.ctx, c.ID)
	if err != nil {
		t.Fatalf("GetHead: %v", err)
	}
	if h.ID != c.ID || h.StdoutSize != int64(len(out)) || h.StderrSize != int64(len(errOut)) {
		t.Fatalf("head %s sizes %d/%d, want %s %d/%d", h.ID, h.StdoutSize, h.StderrSize, c.ID, len(out), len(errOut))
	}
	for _, tc := range []struct {
		stream int
		want   []byte
	}{{streamStdout, out}, {streamStderr, errOut}} {
		var got []byte
		for off := int64(0); off < int64(len(tc.want)); off += 100003 {
			p, err := f.st.ReadOutput(f.ctx, c.ID, tc.stream, off, 100003)
			if err != nil {
				t.Fatalf("ReadOutput(%d, %d): %v", tc.stream, off, err)
			}
			got = append(got, p.Data...)
		}
		if !bytes.Equal(got, tc.want) {
			t.Fatalf("stream %d put together from slices: %d bytes, differs from the %d stored", tc.stream, len(got), len(tc.want))
		}
	}
	if _, err := f.st.GetHead(f.ctx, uuid.NewString()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetHead of an unknown command: %v, want ErrNotFound", err)
	}
}
