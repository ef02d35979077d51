package packaging

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// inOverlay installs, upgrades, removes and purges the packages with the
// real dpkg and adduser, in a mount namespace of its own where /etc, /usr
// and /var are overlays whose writes land in a tmpfs: the machine's own
// root and package database see nothing of it. systemd counts as running
// (/run/systemd/system exists), and the service commands are the recording
// fakes first on PATH. Each step writes the calls it caused to
// $EXECQ_TEST_OUT/<step>.calls and what an operator would see afterwards to
// $EXECQ_TEST_OUT/<step>.state, one fact a line.
const inOverlay = `set -eu
mount -t tmpfs execq-test "$EXECQ_TEST_UPPER"
for d in etc usr var; do
	mkdir "$EXECQ_TEST_UPPER/$d" "$EXECQ_TEST_UPPER/$d.work"
	mount -t overlay execq-test -o "lowerdir=/$d,upperdir=$EXECQ_TEST_UPPER/$d,workdir=$EXECQ_TEST_UPPER/$d.work" "/$d"
	# Never run dpkg against the machine's own /etc, /usr or /var.
	[ "$(findmnt -n -o FSTYPE -M "/$d")" = overlay ]
done
mount -t tmpfs execq-test /run
mkdir -p /run/systemd/system
PATH="$EXECQ_TEST_FAKES:$PATH"
out=$EXECQ_TEST_OUT

step() {
	EXECQ_TEST_CALLS="$out/$1.calls"
	export EXECQ_TEST_CALLS
	: >"$EXECQ_TEST_CALLS"
}
state() {
	{
		echo "user $(getent passwd execq || echo none)"
		echo "group $(getent group execq || echo none)"
		for f in /etc/execq/coordinator.env /etc/execq/agent.env \
			/usr/bin/execq-coordinator /usr/bin/execq-agent /usr/bin/execq \
			/lib/systemd/system/execq-coordinator.service /lib/systemd/system/execq-agent.service; do
			if [ -e "$f" ]; then echo "file $(stat -c '%n %a %U:%G' "$f")"; else echo "file $f absent"; fi
		done
		for f in /etc/systemd/system/*.wants/execq-*; do
			[ -L "$f" ] && echo "link $f"
		done
		grep -l '^# edited by the operator' /etc/execq/*.env 2>/dev/null | sed 's/^/edited /'
		dpkg-query -W -f='status ${Package} ${db:Status-Abbrev}\n' 'execq-*' 2>/dev/null
	} >"$out/$1.state" || true
}

step install
dpkg -i "$@"
state install

# The operator edits the example files and enables both services.
echo '# edited by the operator' >>/etc/execq/coordinator.env
echo '# edited by the operator' >>/etc/execq/agent.env
mkdir -p /etc/systemd/system/multi-user.target.wants
ln -s /lib/systemd/system/execq-coordinator.service /lib/systemd/system/execq-agent.service \
	/etc/systemd/system/multi-user.target.wants/

# The same packages again: dpkg runs the upgrade path (prerm upgrade,
# postrm upgrade, postinst configure <installed version>).
step upgrade
dpkg -i "$@"
state upgrade

step remove
dpkg -r execq-coordinator execq-agent execq-cli
state remove

step purge
dpkg -P execq-coordinator execq-agent execq-cli
state purge
`

// TestDpkgLifecycle installs the packages for real with dpkg (in a
// throwaway overlay of the machine's root), then upgrades, removes and
// purges them, and checks at each step what was started or stopped and
// what is left.
func TestDpkgLifecycle(t *testing.T) {
	debs := built(t)
	need(t, "dpkg", "dpkg")
	need(t, "unshare", "util-linux")
	need(t, "findmnt", "util-linux")
	need(t, "adduser", "adduser")
	need(t, "runc", "runc") // execq-agent depends on it
	if os.Geteuid() != 0 {
		t.Fatalf("dpkg runs in a mount namespace of its own, which needs root (euid %d)", os.Geteuid())
	}
	out, upper := t.TempDir(), t.TempDir()
	// The results must be written outside the overlays to be seen here.
	for _, d := range []string{"/etc/", "/usr/", "/var/"} {
		if strings.HasPrefix(out, d) {
			t.Fatalf("temporary directory %s is under %s, which the test overlays (set TMPDIR)", out, d)
		}
	}
	fakes := t.TempDir()
	for _, name := range serviceCommands { // adduser and getent are real here
		writeExecutable(t, filepath.Join(fakes, name), fakeCommand)
	}

	ctx, cancel := context.WithTimeout(t.Context(), lifecycleTimeout)
	defer cancel()
	args := []string{"--mount", "--propagation", "private", "sh", "-c", inOverlay, "sh"}
	for _, s := range specs {
		args = append(args, debs[s.name])
	}
	cmd := exec.CommandContext(ctx, "unshare", args...)
	cmd.Env = append(os.Environ(),
		"EXECQ_TEST_OUT="+out, "EXECQ_TEST_UPPER="+upper, "EXECQ_TEST_FAKES="+fakes,
		"EXECQ_TEST_CALLS=", // set by the script for each step
		"DEBIAN_FRONTEND=noninteractive")
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	err := cmd.Run()
	t.Logf("dpkg:\n%s", output.String())
	if err != nil {
		t.Fatalf("install, upgrade, remove, purge: %v", err)
	}

	calls := func(step string) []string {
		c := readLines(t, filepath.Join(out, step+".calls"))
		slices.Sort(c)
		return c
	}
	state := func(step string) []string { return readLines(t, filepath.Join(out, step+".state")) }
	has := func(step string, want ...string) {
		t.Helper()
		got := state(step)
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("after %s: no %q in\n  %s", step, w, strings.Join(got, "\n  "))
			}
		}
	}
	lacks := func(step string, prefix string) {
		t.Helper()
		for _, line := range state(step) {
			if strings.HasPrefix(line, prefix) {
				t.Errorf("after %s: %q", step, line)
			}
		}
	}
	reloads := []string{"systemctl --system daemon-reload", "systemctl --system daemon-reload"}

	// Install: the user and the files, services told of, not started.
	if got := calls("install"); !slices.Equal(got, reloads) {
		t.Errorf("install called %q, want %q", got, reloads)
	}
	has("install",
		"file /etc/execq/coordinator.env 600 root:root",
		"file /etc/execq/agent.env 600 root:root",
		"file /usr/bin/execq-coordinator 755 root:root",
		"file /usr/bin/execq-agent 755 root:root",
		"file /usr/bin/execq 755 root:root",
		"file /lib/systemd/system/execq-coordinator.service 644 root:root",
		"file /lib/systemd/system/execq-agent.service 644 root:root",
		"status execq-coordinator ii ",
		"status execq-agent ii ",
		"status execq-cli ii ",
	)
	user := regexp.MustCompile(`^user execq:x:(\d+):(\d+)::/nonexistent:/usr/sbin/nologin$`)
	var uid, gid int
	for _, line := range state("install") {
		if m := user.FindStringSubmatch(line); m != nil {
			uid, _ = strconv.Atoi(m[1])
			gid, _ = strconv.Atoi(m[2])
		}
	}
	if uid == 0 || uid >= 1000 {
		t.Errorf("no execq system user (uid 1..999, no home, no login) after install: %q", state("install"))
	}
	has("install", "group execq:x:"+strconv.Itoa(gid)+":")

	// Upgrade: nothing stopped, started or restarted; the operator's edits
	// and enable links kept.
	if got := calls("upgrade"); !slices.Equal(got, reloads) {
		t.Errorf("upgrade called %q, want %q", got, reloads)
	}
	has("upgrade",
		"edited /etc/execq/coordinator.env",
		"edited /etc/execq/agent.env",
		"link /etc/systemd/system/multi-user.target.wants/execq-coordinator.service",
		"link /etc/systemd/system/multi-user.target.wants/execq-agent.service",
	)

	// Remove: both services stopped; configuration kept.
	want := append([]string{
		"deb-systemd-invoke stop execq-agent.service",
		"deb-systemd-invoke stop execq-coordinator.service",
	}, reloads...)
	slices.Sort(want)
	if got := calls("remove"); !slices.Equal(got, want) {
		t.Errorf("remove called %q, want %q", got, want)
	}
	has("remove",
		"file /usr/bin/execq-coordinator absent",
		"file /usr/bin/execq-agent absent",
		"file /usr/bin/execq absent",
		"edited /etc/execq/coordinator.env",
		"edited /etc/execq/agent.env",
		"status execq-coordinator rc ",
		"status execq-agent rc ",
	)

	// Purge: configuration and enable links gone, the user kept.
	if got := calls("purge"); !slices.Equal(got, reloads) {
		t.Errorf("purge called %q, want %q", got, reloads)
	}
	has("purge",
		"file /etc/execq/coordinator.env absent",
		"file /etc/execq/agent.env absent",
		"user execq:x:"+strconv.Itoa(uid)+":"+strconv.Itoa(gid)+"::/nonexistent:/usr/sbin/nologin",
	)
	lacks("purge", "link ")
	lacks("purge", "status ")
}
