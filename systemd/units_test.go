package systemd

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// units are the unit files checked, with the most exposure
// `systemd-analyze security` may give each (0 best, 10 worst): a little
// above what they reach (README, "systemd"), so weakening a unit's
// hardening fails here. The agent stays exposed because runc needs root,
// the host's namespaces and its cgroups (see its unit).
var units = []struct {
	file, binary, pkg string
	maxExposure       float64
}{
	{"execq-coordinator.service", "execq-coordinator", "./coordinator/cmd/execq-coordinator", 1.3},
	{"execq-agent.service", "execq-agent", "./agent/cmd/execq-agent", 9.0},
}

// installedBin is where the units expect the binaries.
const installedBin = "/usr/local/bin/"

// analyze returns the path of systemd-analyze, failing the test if it is
// missing: the check must not pass by being skipped.
func analyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze not found (install the systemd package): %v", err)
	}
	return p
}

// stage copies the units into a temporary directory with their binaries
// built there, and the ExecStart paths pointed at them: verify checks that
// every command exists and is executable, and the binaries are not
// installed on the machine running the tests.
func stage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range units {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, u.binary), u.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", u.pkg, err, out)
		}
		raw, err := os.ReadFile(u.file)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(raw), installedBin, dir+"/")
		if err := os.WriteFile(filepath.Join(dir, u.file), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestUnitsVerify: systemd-analyze verify accepts both units without a
// word. It exits 0 on unknown keys and bad values too (it ignores them
// with a warning), so any output fails the test.
func TestUnitsVerify(t *testing.T) {
	bin := analyze(t)
	dir := stage(t)
	args := []string{"verify", "--man=no"}
	for _, u := range units {
		args = append(args, filepath.Join(dir, u.file))
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// overall matches the summary line of systemd-analyze security.
var overall = regexp.MustCompile(`Overall exposure level for \S+: (\d+\.\d)`)

// TestUnitsSecurity: each unit's exposure, as systemd-analyze security
// scores the file itself (--offline), is at most its bound.
func TestUnitsSecurity(t *testing.T) {
	bin := analyze(t)
	for _, u := range units {
		// A path, not a name: the file here, never an installed unit.
		out, err := exec.Command(bin, "security", "--offline=true", "--no-pager", "./"+u.file).CombinedOutput()
		if err != nil {
			t.Fatalf("systemd-analyze security %s: %v\n%s", u.file, err, out)
		}
		m := overall.FindSubmatch(out)
		if m == nil {
			t.Fatalf("systemd-analyze security %s: no overall exposure in\n%s", u.file, out)
		}
		score, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("%s: exposure %.1f (at most %.1f)", u.file, score, u.maxExposure)
		if score > u.maxExposure {
			t.Errorf("%s: exposure %.1f, want at most %.1f; its weak points:\n%s", u.file, score, u.maxExposure, weakPoints(out))
		}
	}
}

// TestUnitsNotify: both units wait for the daemon's READY=1 and watch it,
// which is what the daemons' notify support is for.
func TestUnitsNotify(t *testing.T) {
	for _, u := range units {
		raw, err := os.ReadFile(u.file)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(raw), "\n")
		for _, want := range []string{"Type=notify", "NotifyAccess=main", "WatchdogSec=", "TimeoutStartSec="} {
			found := false
			for _, l := range lines {
				found = found || strings.HasPrefix(l, want)
			}
			if !found {
				t.Errorf("%s: no %s line", u.file, want)
			}
		}
	}
}

// weakPoints keeps the lines of a security report that cost exposure.
func weakPoints(report []byte) string {
	var b strings.Builder
	for _, l := range strings.Split(string(report), "\n") {
		if strings.HasPrefix(l, "✗") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
