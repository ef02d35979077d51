package e2e_test

import (
	"os/exec"
	"strings"
	"testing"
)

// containerRuns reports whether a process whose command line contains want
// runs in the container, using `runc ps` (the host's ps over the
// container's cgroup).
func containerRuns(t testing.TB, root, id, want string) bool {
	t.Helper()
	out, err := exec.Command("runc", "--root", root, "ps", "-o", "args", id).CombinedOutput()
	if err != nil {
		t.Fatalf("runc ps %s: %v: %s", id, err, out)
	}
	return strings.Contains(string(out), want)
}
