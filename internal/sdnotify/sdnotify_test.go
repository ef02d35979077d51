package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// listen opens a unixgram socket as systemd's notify socket and points
// $NOTIFY_SOCKET at it.
func listen(t *testing.T) *net.UnixConn {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdnotify") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

// messages returns what arrived within d.
func messages(t *testing.T, conn *net.UnixConn, d time.Duration) []string {
	t.Helper()
	var got []string
	buf := make([]byte, 4096)
	_ = conn.SetReadDeadline(time.Now().Add(d))
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return got
		}
		got = append(got, string(buf[:n]))
	}
}

// TestMessages: Ready and Stopping go out once each however often they are
// called; Alive goes out at most once a second.
func TestMessages(t *testing.T) {
	conn := listen(t)
	t.Setenv("WATCHDOG_USEC", "4000000")
	n := New(nil)
	if got := n.WatchdogInterval(); got != 2*time.Second {
		t.Fatalf("WatchdogInterval = %v, want 2s (half of WATCHDOG_USEC)", got)
	}
	n.Ready()
	n.Ready()
	n.Alive()
	n.Alive() // too soon after the first: not sent
	n.Stopping()
	n.Stopping()
	got := messages(t, conn, 200*time.Millisecond)
	want := []string{"READY=1", "WATCHDOG=1", "STOPPING=1"}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

// TestWatchdogForAnotherPID: a WATCHDOG_PID that is not this process (a
// child that inherited the variables) means no watchdog here.
func TestWatchdogForAnotherPID(t *testing.T) {
	conn := listen(t)
	t.Setenv("WATCHDOG_USEC", "4000000")
	t.Setenv("WATCHDOG_PID", "1")
	n := New(nil)
	if n.WatchdogInterval() != 0 {
		t.Fatalf("WatchdogInterval = %v, want 0", n.WatchdogInterval())
	}
	n.Alive()
	if got := messages(t, conn, 100*time.Millisecond); len(got) != 0 {
		t.Fatalf("sent %q, want nothing", got)
	}
}

// TestOutsideSystemd: without $NOTIFY_SOCKET every call is a no-op, as is
// every call on a nil Notifier.
func TestOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	n := New(nil)
	n.Ready()
	n.Alive()
	n.Stopping()
	var none *Notifier
	none.Ready()
	none.Alive()
	none.Stopping()
	if none.WatchdogInterval() != 0 || n.WatchdogInterval() != 0 {
		t.Fatal("watchdog interval without a watchdog")
	}
}
