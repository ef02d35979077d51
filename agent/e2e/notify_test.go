package e2e_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/coordinator/testpg"
	"github.com/execq/execq/shared"
)

// notifySocket plays systemd's side of the notify protocol: a unixgram
// socket whose datagrams are the daemon's state messages.
type notifySocket struct {
	t    testing.TB
	path string
	msgs chan string
}

func newNotifySocket(t testing.TB) *notifySocket {
	t.Helper()
	// Not t.TempDir: socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "execq-notify-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &notifySocket{t: t, path: filepath.Join(dir, "notify"), msgs: make(chan string, 1024)}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				close(n.msgs)
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	return n
}

// env is what systemd sets for a Type=notify unit with WatchdogSec=watchdog.
func (n *notifySocket) env(watchdog time.Duration) []string {
	return []string{"NOTIFY_SOCKET=" + n.path, "WATCHDOG_USEC=" + strconv.FormatInt(watchdog.Microseconds(), 10)}
}

// await returns the messages received up to and including want, failing
// if want does not arrive within d.
func (n *notifySocket) await(want string, d time.Duration) []string {
	n.t.Helper()
	var seen []string
	timeout := time.After(d)
	for {
		select {
		case m := <-n.msgs:
			seen = append(seen, m)
			if m == want {
				return seen
			}
		case <-timeout:
			n.t.Fatalf("no %s within %s; received %q", want, d, seen)
		}
	}
}

// TestCoordinatorNotify: under systemd's notify protocol the coordinator
// says READY=1 only once it has migrated its database and answers, keeps
// the watchdog fed, and says STOPPING=1 when SIGTERM starts its drain.
func TestCoordinatorNotify(t *testing.T) {
	t.Parallel()
	dbURL, addr := testpg.New(t), freeAddr(t) // a database no one has migrated
	ns := newNotifySocket(t)
	coord := startProc(t, "execq-coordinator", append([]string{
		"EXECQ_DATABASE_URL=" + dbURL, "EXECQ_LISTEN=" + addr, "EXECQ_REAP_INTERVAL=200ms",
	}, ns.env(2*time.Second)...), "serve")

	if seen := ns.await("READY=1", time.Minute); len(seen) != 1 {
		t.Fatalf("messages before READY=1: %q", seen[:len(seen)-1])
	}
	// At that moment the replica answers and its schema is complete.
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatalf("READY=1 sent but /readyz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("READY=1 sent but /readyz answers %d", resp.StatusCode)
	}
	st, err := store.Open(context.Background(), dbURL, store.Options{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if applied, err := st.Migrate(context.Background()); err != nil || len(applied) > 0 {
		t.Fatalf("READY=1 sent before the migrations ran: still to apply %v (err %v)", applied, err)
	}

	// WATCHDOG_USEC=2s: a keep-alive at least every second.
	for range 3 {
		if seen := ns.await("WATCHDOG=1", 5*time.Second); len(seen) != 1 {
			t.Fatalf("unexpected messages while running: %q", seen)
		}
	}
	coord.signal(syscall.SIGTERM)
	ns.await("STOPPING=1", 10*time.Second)
	coord.wantCleanExit("after SIGTERM")
}

// TestAgentNotify: the agent says READY=1 only once the coordinator has its
// containers (so commands for them can be submitted and leased), keeps the
// watchdog fed from its lease loop, and says STOPPING=1 when SIGTERM starts
// its drain.
func TestAgentNotify(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	c := s.container()
	ns := newNotifySocket(t)
	agent := startProc(t, "execq-agent", append([]string{"EXECQ_AGENT_TOKEN=" + s.nodeToken}, ns.env(2*time.Second)...),
		"--coordinator", s.url(""), "--runc-root", s.runcRoot, "--work-dir", s.workDir)

	seen := ns.await("READY=1", time.Minute)
	if slices.Contains(seen[:len(seen)-1], "STOPPING=1") {
		t.Fatalf("messages before READY=1: %q", seen)
	}
	var list shared.ContainerList
	if code := s.do("GET", "/api/v1/containers", s.userToken, nil, &list); code != http.StatusOK {
		t.Fatalf("list containers: %d", code)
	}
	if !slices.ContainsFunc(list.Containers, func(r shared.ContainerInfo) bool { return r.ID == c.ID }) {
		t.Fatalf("READY=1 sent but the coordinator does not list container %s: %+v", c.ID, list.Containers)
	}

	for range 3 {
		if seen := ns.await("WATCHDOG=1", 5*time.Second); len(seen) != 1 {
			t.Fatalf("unexpected messages while running: %q", seen)
		}
	}
	agent.signal(syscall.SIGTERM)
	ns.await("STOPPING=1", 10*time.Second)
	agent.wantCleanExit("after SIGTERM")
}
