package packaging

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// serviceCommands and userCommands are what a maintainer script may reach
// for to manage services or users. The test puts a fake of each first on
// PATH that only writes down how it was called.
var (
	serviceCommands = []string{"systemctl", "deb-systemd-invoke", "deb-systemd-helper", "invoke-rc.d", "service", "update-rc.d"}
	userCommands    = []string{"adduser", "addgroup", "useradd", "groupadd", "deluser", "delgroup", "userdel", "groupdel"}
)

// fakeCommand writes to $EXECQ_TEST_CALLS when set, else to
// $EXECQ_TEST_OUT/calls.
const fakeCommand = `#!/bin/sh
echo "${0##*/} $*" >>"${EXECQ_TEST_CALLS:-$EXECQ_TEST_OUT/calls}"
`

// fakeGetent answers as if there were no execq user or group, unless the
// case says there is.
const fakeGetent = `#!/bin/sh
echo "getent $*" >>"$EXECQ_TEST_OUT/calls"
case "$1 $2" in
"passwd execq") [ "$EXECQ_TEST_USER" = 1 ] && echo "execq:x:999:999::/nonexistent:/usr/sbin/nologin" && exit 0 ;;
"group execq") [ "$EXECQ_TEST_GROUP" = 1 ] && echo "execq:x:999:" && exit 0 ;;
esac
exit 2
`

// inNamespace runs a maintainer script in a mount namespace of its own, so
// that what it sees of systemd is the case's and the machine's is never
// touched: /run is empty (systemd is not PID 1: a chroot, a container, an
// image build) or holds /run/systemd/system (it is), and
// /etc/systemd/system holds only the link an operator's `systemctl enable`
// made. The links left there afterwards are listed in $EXECQ_TEST_OUT/wants.
const inNamespace = `set -eu
mount -t tmpfs execq-test /run
if [ "$EXECQ_TEST_SYSTEMD" = 1 ]; then mkdir -p /run/systemd/system; fi
mount -t tmpfs execq-test /etc/systemd/system
mkdir /etc/systemd/system/multi-user.target.wants
ln -s "/lib/systemd/system/$EXECQ_TEST_UNIT" "/etc/systemd/system/multi-user.target.wants/$EXECQ_TEST_UNIT"
rc=0
PATH="$EXECQ_TEST_FAKES:$PATH" "$@" || rc=$?
ls /etc/systemd/system/multi-user.target.wants >"$EXECQ_TEST_OUT/wants"
exit $rc
`

// scriptCase is one call of a maintainer script, as dpkg makes it.
type scriptCase struct {
	name    string
	script  string   // postinst, prerm or postrm
	args    []string // dpkg's arguments
	systemd bool     // systemd is the running init
	user    bool     // the execq user exists already
	group   bool     // the execq group exists already
	// calls are the recorded commands, in order; {unit} stands for the
	// package's unit.
	calls []string
	// linkKept: the operator's enable link is still there afterwards.
	linkKept bool
}

const (
	oldVersion = "0.0.0~git20260101000000.0123456789ab"
	newVersion = "0.0.0~git20270101000000.0123456789ab"
)

// daemonCases hold for both daemons' packages. Installing or upgrading
// never starts, restarts or enables anything; removing stops the service;
// an upgrade's prerm and postrm leave it alone.
var daemonCases = []scriptCase{
	{name: "install, systemd running", script: "postinst", args: []string{"configure", ""}, systemd: true,
		calls: []string{"systemctl --system daemon-reload"}, linkKept: true},
	{name: "upgrade, systemd running", script: "postinst", args: []string{"configure", oldVersion}, systemd: true,
		calls: []string{"systemctl --system daemon-reload"}, linkKept: true},
	{name: "upgrade, no systemd", script: "postinst", args: []string{"configure", oldVersion},
		linkKept: true},
	{name: "failed upgrade rolled back", script: "postinst", args: []string{"abort-upgrade", newVersion}, systemd: true,
		calls: []string{"systemctl --system daemon-reload"}, linkKept: true},
	{name: "upgrade, old prerm", script: "prerm", args: []string{"upgrade", newVersion}, systemd: true,
		linkKept: true},
	{name: "upgrade, old postrm", script: "postrm", args: []string{"upgrade", newVersion}, systemd: true,
		linkKept: true},
	{name: "remove, systemd running", script: "prerm", args: []string{"remove"}, systemd: true,
		calls: []string{"deb-systemd-invoke stop {unit}"}, linkKept: true},
	{name: "remove, no systemd", script: "prerm", args: []string{"remove"},
		linkKept: true},
	{name: "removed, systemd running", script: "postrm", args: []string{"remove"}, systemd: true,
		calls: []string{"systemctl --system daemon-reload"}, linkKept: true},
	{name: "purge, systemd running", script: "postrm", args: []string{"purge"}, systemd: true,
		calls: []string{"systemctl --system daemon-reload"}},
	{name: "purge, no systemd", script: "postrm", args: []string{"purge"}},
}

// coordinatorCases add the execq user's creation. (In daemonCases, the
// coordinator's postinst finds the user there and only looks it up.)
var coordinatorCases = []scriptCase{
	{name: "install creates the user", script: "postinst", args: []string{"configure", ""}, systemd: true,
		calls: []string{
			"getent passwd execq",
			"getent group execq",
			"adduser --system --quiet --group --no-create-home --home /nonexistent execq",
			"systemctl --system daemon-reload",
		}, linkKept: true},
	{name: "install joins an existing group", script: "postinst", args: []string{"configure", ""}, group: true,
		calls: []string{
			"getent passwd execq",
			"getent group execq",
			"adduser --system --quiet --ingroup execq --no-create-home --home /nonexistent execq",
		}, linkKept: true},
}

// TestMaintainerScripts runs each daemon package's own maintainer scripts,
// as unpacked from the .deb, for install, upgrade, remove and purge, with
// and without a running systemd, and compares every service and user
// command they issue with what is expected.
func TestMaintainerScripts(t *testing.T) {
	debs := built(t)
	need(t, "unshare", "util-linux")
	if os.Geteuid() != 0 {
		t.Fatalf("the maintainer scripts run in a mount namespace of their own, which needs root (euid %d)", os.Geteuid())
	}
	if fi, err := os.Stat("/etc/systemd/system"); err != nil || !fi.IsDir() {
		t.Fatalf("/etc/systemd/system is needed as a mount point (install systemd): %v", err)
	}
	fakes := t.TempDir()
	for _, name := range slices.Concat(serviceCommands, userCommands) {
		writeExecutable(t, filepath.Join(fakes, name), fakeCommand)
	}
	writeExecutable(t, filepath.Join(fakes, "getent"), fakeGetent)

	for _, s := range specs {
		if s.unit == "" {
			continue
		}
		control := t.TempDir()
		run(t, "dpkg-deb", "--control", debs[s.name], control)
		cases := slices.Clone(daemonCases)
		if s.name == "execq-coordinator" {
			// The coordinator's postinst also looks the user up first.
			for i, c := range cases {
				if c.script == "postinst" && c.args[0] == "configure" {
					c.user, c.group = true, true
					c.calls = append([]string{"getent passwd execq"}, c.calls...)
					cases[i] = c
				}
			}
			cases = append(cases, coordinatorCases...)
		}
		for _, c := range cases {
			t.Run(s.name+"/"+c.name, func(t *testing.T) {
				calls, links := runScript(t, filepath.Join(control, c.script), s.unit, fakes, c)
				var want []string
				for _, call := range c.calls {
					want = append(want, strings.ReplaceAll(call, "{unit}", s.unit))
				}
				if !slices.Equal(calls, want) {
					t.Errorf("%s %s called\n  %s\nwant\n  %s", c.script, strings.Join(c.args, " "),
						strings.Join(calls, "\n  "), strings.Join(want, "\n  "))
				}
				for _, call := range calls {
					if startsService(call) {
						t.Errorf("%s %s starts a service: %s", c.script, strings.Join(c.args, " "), call)
					}
				}
				if kept := slices.Contains(links, s.unit); kept != c.linkKept {
					t.Errorf("operator's enable link kept = %v, want %v", kept, c.linkKept)
				}
			})
		}
	}
}

// startsService says whether a recorded call would start, restart or enable
// a service, whatever a case expects.
func startsService(call string) bool {
	f := strings.Fields(call)
	if len(f) == 0 {
		return false
	}
	switch f[0] {
	case "systemctl", "deb-systemd-invoke", "deb-systemd-helper", "invoke-rc.d", "service", "update-rc.d":
	default:
		return false
	}
	for _, arg := range f[1:] {
		switch arg {
		case "start", "restart", "try-restart", "reload-or-restart", "try-reload-or-restart",
			"condrestart", "force-reload", "enable", "reenable", "unmask", "isolate", "defaults":
			return true
		}
	}
	return false
}

// runScript runs one maintainer script as dpkg would (its own shebang, the
// case's arguments) and returns the commands it called and the enable links
// left.
func runScript(t *testing.T, script, unit, fakes string, c scriptCase) (calls, links []string) {
	t.Helper()
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), commandTimeout)
	defer cancel()
	args := append([]string{"--mount", "--propagation", "private", "sh", "-c", inNamespace, "sh", script}, c.args...)
	cmd := exec.CommandContext(ctx, "unshare", args...)
	flag := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	cmd.Env = append(os.Environ(),
		"EXECQ_TEST_OUT="+out,
		"EXECQ_TEST_FAKES="+fakes,
		"EXECQ_TEST_UNIT="+unit,
		"EXECQ_TEST_SYSTEMD="+flag(c.systemd),
		"EXECQ_TEST_USER="+flag(c.user),
		"EXECQ_TEST_GROUP="+flag(c.group),
	)
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(script), strings.Join(c.args, " "), err, output.String())
	}
	return readLines(t, filepath.Join(out, "calls")), readLines(t, filepath.Join(out, "wants"))
}

// readLines returns a file's lines; none if it does not exist.
func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	text := strings.TrimRight(string(b), "\n")
	if text == "" {
		return nil
	}
	return strings.Split(text, "\n")
}

func writeExecutable(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}
