package api

import (
	"testing"
	"time"
)

func TestTokenCache(t *testing.T) {
	c := newTokenCache[string](50 * time.Millisecond)
	if _, ok := c.get("tok"); ok {
		t.Fatal("hit on an empty cache")
	}
	c.put("tok", "alice")
	if v, ok := c.get("tok"); !ok || v != "alice" {
		t.Fatalf("get = %q, %v; want alice, true", v, ok)
	}
	if _, ok := c.get("other"); ok {
		t.Fatal("hit for a token never stored")
	}
	time.Sleep(60 * time.Millisecond)
	if _, ok := c.get("tok"); ok {
		t.Fatal("hit after the entry expired")
	}
}

func TestTokenCacheDisabled(t *testing.T) {
	c := newTokenCache[string](0)
	c.put("tok", "alice")
	if _, ok := c.get("tok"); ok {
		t.Fatal("a zero TTL must disable the cache")
	}
}
