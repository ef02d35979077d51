// Package runctest makes real runc containers for tests: a tiny busybox
// bundle in t.TempDir(), started with `runc run -d` under a runc root of the
// test's own, with a canonical UUID as container ID, killed and deleted by
// t.Cleanup.
//
// It needs runc and a statically linked busybox (/bin/busybox, Debian's
// busybox-static) and must run as root. When either is missing the test
// fails: a test that cannot run the real thing never passes by skipping.
package runctest
