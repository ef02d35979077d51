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
// runs in the container.
func containerRuns(t testing.TB, root, id, want string) bool {
	t.Helper()
	return containerPid(t, root, id, want) != 0
}

// containerPid returns the host pid of a process in the container whose
// command line contains want, or 0: `runc ps --format json` lists the host
// PIDs of the container's cgroup, and /proc gives their command lines.
func containerPid(t testing.TB, root, id, want string) int {
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
		if err == nil && strings.Contains(strings.ReplaceAll(string(raw), "\x00", " "), want) {
			return pid
		}
	}
	return 0
}
