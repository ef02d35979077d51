package e2e_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// containerRuns reports whether a process whose command line contains want
// runs in the container: `runc ps --format json` lists the host PIDs of the
// container's cgroup, and /proc gives their command lines.
func containerRuns(t testing.TB, root, id, want string) bool {
	t.Helper()
	out, err := exec.Command("runc", "--root", root, "ps", "--format", "json", id).Output()
	if err != nil {
		t.Fatalf("runc ps %s: %v", id, err)
	}
	var pids []int
	if err := json.Unmarshal(out, &pids); err != nil {
		t.Fatalf("runc ps %s: %q: %v", id, out, err)
	}
	for _, pid := range pids {
		raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err != nil {
			continue // exited meanwhile
		}
		if strings.Contains(strings.ReplaceAll(string(raw), "\x00", " "), want) {
			return true
		}
	}
	return false
}
