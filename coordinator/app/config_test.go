package app

import (
	"strings"
	"testing"
	"time"
)

// TestValidateControlLimits: the timeout and grace settings must be whole
// seconds with each default within its maximum, and the error names the
// flags to fix.
func TestValidateControlLimits(t *testing.T) {
	ok := DefaultConfig()
	ok.DatabaseURL = "postgres://x"
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"default over max", func(c *Config) { c.DefaultTimeout = 2 * c.MaxTimeout }, "--default-timeout"},
		{"zero queue timeout", func(c *Config) { c.DefaultQueueTimeout = 0 }, "--default-queue-timeout"},
		{"fractional grace", func(c *Config) { c.DefaultGrace = 1500 * time.Millisecond }, "--default-grace"},
		{"grace over max", func(c *Config) { c.DefaultGrace = c.MaxGrace + time.Second }, "--default-grace"},
	} {
		c := ok
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
	zero := ok
	zero.DefaultGrace = 0 // SIGKILL right after SIGTERM is a valid choice
	if err := zero.Validate(); err != nil {
		t.Errorf("grace 0: %v", err)
	}
}

// TestValidateHTTPLimits: the connection timeouts and the large-read
// limits must be positive, and the error names the flag to fix.
func TestValidateHTTPLimits(t *testing.T) {
	ok := DefaultConfig()
	ok.DatabaseURL = "postgres://x"
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no idle timeout", func(c *Config) { c.IdleTimeout = 0 }, "--http-idle-timeout"},
		{"no read timeout", func(c *Config) { c.ReadTimeout = 0 }, "--http-read-timeout"},
		{"negative write timeout", func(c *Config) { c.WriteTimeout = -time.Second }, "--http-write-timeout"},
		{"no large reads", func(c *Config) { c.MaxLargeReads = 0 }, "--max-large-reads"},
		{"negative queue", func(c *Config) { c.MaxLargeReadQueue = -1 }, "--max-large-read-queue"},
	} {
		c := ok
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
}

// TestValidateRetention: 0 keeps commands forever; a negative retention is
// refused with the flag to fix.
func TestValidateRetention(t *testing.T) {
	c := DefaultConfig()
	c.DatabaseURL = "postgres://x"
	if c.Retention != 30*24*time.Hour {
		t.Errorf("default retention %s, want 720h", c.Retention)
	}
	c.Retention = 0
	if err := c.Validate(); err != nil {
		t.Errorf("retention 0: %v", err)
	}
	c.Retention = -time.Hour
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--retention") {
		t.Errorf("negative retention: %v, want an error naming --retention", err)
	}
}
