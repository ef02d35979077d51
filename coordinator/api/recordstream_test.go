package api

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

// reference is what the record gave before it was streamed: encoding/json
// of the stream with each run of invalid UTF-8 replaced by one U+FFFD.
func reference(t *testing.T, data []byte) []byte {
	t.Helper()
	js, err := json.Marshal(strings.ToValidUTF8(string(data), "\uFFFD"))
	if err != nil {
		t.Fatal(err)
	}
	return js[1 : len(js)-1]
}

// streamed encodes data fed to a jsonStringWriter in pieces of the sizes
// next gives.
func streamed(t *testing.T, data []byte, next func() int) []byte {
	t.Helper()
	var out bytes.Buffer
	e := newJSONStringWriter(&out)
	for len(data) > 0 {
		n := min(next(), len(data))
		if _, err := e.Write(data[:n]); err != nil {
			t.Fatal(err)
		}
		data = data[n:]
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestJSONStringWriterMatchesEncodingJSON: whatever the bytes and however
// they are cut into pieces, the streamed string is byte for byte the one
// encoding/json makes of the whole (runes and invalid runs split between
// pieces included).
func TestJSONStringWriterMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	atoms := [][]byte{
		[]byte("a"), []byte("Z9 "), {0}, {'\n'}, {'\r'}, {'\t'}, {'\b'}, {'\f'}, {0x1f}, {0x7f},
		[]byte(`"`), []byte(`\`), []byte("<"), []byte(">"), []byte("&"),
		[]byte("é"), []byte("€"), []byte("𝄞"), []byte("\u2028"), []byte("\u2029"), []byte("\uFFFD"),
		{0xff}, {0xfe}, {0x80}, {0xbf}, {0xc0}, {0xc3}, {0xe2, 0x82}, {0xf0, 0x9d, 0x84}, {0xed, 0xa0, 0x80}, // lone surrogate
		{0xf4, 0x90, 0x80, 0x80}, // past U+10FFFF
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		var data []byte
		for range rng.IntN(40) {
			data = append(data, atoms[rng.IntN(len(atoms))]...)
		}
		maxPiece := 1 + rng.IntN(8)
		got := streamed(t, data, func() int { return 1 + rng.IntN(maxPiece) })
		if want := reference(t, data); !bytes.Equal(got, want) {
			t.Fatalf("case %d: input %q\n got %s\nwant %s", i, data, got, want)
		}
	}
	// Large pieces as the server feeds them, with NULs.
	big := bytes.Repeat([]byte("x\x00é\xff"), 100000)
	if got, want := streamed(t, big, func() int { return encodePieceBytes }), reference(t, big); !bytes.Equal(got, want) {
		t.Fatalf("large input: streamed encoding differs from encoding/json's")
	}
}
