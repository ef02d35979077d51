package shared

import (
	"encoding/json"
	"fmt"
)

// MaxIdempotencyKeyBytes bounds an idempotency key (the single submit's
// Idempotency-Key header, a batch item's idempotency_key).
const MaxIdempotencyKeyBytes = 255

// CheckIdempotencyKey says what is wrong with key as an idempotency key, ""
// if nothing: a key is 1 to 255 bytes of printable ASCII (space to tilde),
// so it can travel in a header and be logged without escaping.
func CheckIdempotencyKey(key string) string {
	if key == "" || len(key) > MaxIdempotencyKeyBytes {
		return fmt.Sprintf("must be 1 to %d bytes, got %d", MaxIdempotencyKeyBytes, len(key))
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return fmt.Sprintf("must be printable ASCII; byte %d is 0x%02x", i, key[i])
		}
	}
	return ""
}

// IdempotencyKey is a batch item's optional idempotency_key. Absent leaves
// Set false; a key that is present is checked, "" included, as the header
// is. It is a struct, not a string, so an empty key sent by mistake is
// refused rather than read as no key (which would make a retry queue the
// command again); and not a pointer, so the coordinator's decoder refuses
// an explicit null instead of reading it as absent (as Seconds).
type IdempotencyKey struct {
	Value string
	Set   bool
}

// IdemKey returns key, set.
func IdemKey(key string) IdempotencyKey { return IdempotencyKey{Value: key, Set: true} }

// MarshalJSON writes the key; use omitzero to leave an unset one out.
func (k IdempotencyKey) MarshalJSON() ([]byte, error) { return json.Marshal(k.Value) }

// UnmarshalJSON reads a JSON string.
func (k *IdempotencyKey) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil // refused by the coordinator's null check
	}
	if err := json.Unmarshal(b, &k.Value); err != nil {
		return err
	}
	k.Set = true
	return nil
}
