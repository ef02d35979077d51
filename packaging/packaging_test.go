package packaging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Bounds, not expectations: the first build on a fresh machine downloads and
// compiles nfpm and compiles all three binaries on a loaded machine.
const (
	buildTimeout     = 15 * time.Minute
	lintianTimeout   = 5 * time.Minute
	lifecycleTimeout = 5 * time.Minute // four dpkg runs
	commandTimeout   = time.Minute
)

// spec is what one package must hold.
type spec struct {
	name     string
	binaries []string // in /usr/bin
	unit     string   // in /lib/systemd/system; "" for none
	conffile string   // the example environment file; "" for none
	depends  string
}

var specs = []spec{
	{
		name:     "execq-coordinator",
		binaries: []string{"execq-coordinator"},
		unit:     "execq-coordinator.service",
		conffile: "/etc/execq/coordinator.env",
		depends:  "adduser",
	},
	{
		name:     "execq-agent",
		binaries: []string{"execq-agent"},
		unit:     "execq-agent.service",
		conffile: "/etc/execq/agent.env",
		depends:  "runc",
	},
	{
		name:     "execq-cli",
		binaries: []string{"execq"},
	},
}

// The packages are built once per test binary, as `make package` builds
// them, into a directory TestMain removes.
var build struct {
	once    sync.Once
	dir     string
	version string
	debs    map[string]string // package name → .deb path
	err     error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// built returns the .deb of each package by name.
func built(t *testing.T) map[string]string {
	t.Helper()
	need(t, "dpkg-deb", "dpkg")
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "execq-packages-")
		if build.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, "./version.sh").Output()
		if err != nil {
			build.err = fmt.Errorf("version.sh: %w", err)
			return
		}
		build.version = strings.TrimSpace(string(out))
		cmd := exec.CommandContext(ctx, "./build.sh", build.dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("build.sh: %w\n%s", err, out)
			return
		}
		build.debs = map[string]string{}
		for _, s := range specs {
			matches, _ := filepath.Glob(filepath.Join(build.dir, s.name+"_*.deb"))
			if len(matches) != 1 {
				build.err = fmt.Errorf("build.sh made %d packages named %s_*.deb, want 1", len(matches), s.name)
				return
			}
			build.debs[s.name] = matches[0]
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.debs
}

// need fails the test when a tool it runs is missing: the checks here are
// what Debian's own tools say, never skipped.
func need(t *testing.T, tool, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Fatalf("%s not found (apt-get install %s): %v", tool, pkg, err)
	}
}

// run runs a command and returns its standard output, failing the test on
// a non-zero exit.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), commandTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// TestPackageFields: each package's control fields as dpkg sees them.
func TestPackageFields(t *testing.T) {
	debs := built(t)
	need(t, "dpkg", "dpkg")
	arch := strings.TrimSpace(run(t, "dpkg", "--print-architecture"))
	run(t, "dpkg", "--validate-version", build.version)
	if !regexp.MustCompile(`^[0-9]`).MatchString(build.version) {
		t.Errorf("version %q does not start with a digit", build.version)
	}
	for _, s := range specs {
		t.Run(s.name, func(t *testing.T) {
			field := func(name string) string {
				return strings.TrimSpace(run(t, "dpkg-deb", "--field", debs[s.name], name))
			}
			for name, want := range map[string]string{
				"Package":      s.name,
				"Version":      build.version,
				"Architecture": arch,
				"Depends":      s.depends,
				"Section":      "admin",
				"Priority":     "optional",
			} {
				if got := field(name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			if field("Maintainer") == "" || field("Description") == "" {
				t.Errorf("no Maintainer or Description")
			}
			if want := fmt.Sprintf("%s_%s_%s.deb", s.name, build.version, arch); filepath.Base(debs[s.name]) != want {
				t.Errorf("file name %s, want %s", filepath.Base(debs[s.name]), want)
			}
		})
	}
}

// entry is one line of `dpkg-deb --contents`.
type entry struct{ mode, owner string }

// contents lists a package's files (directories excluded) by path.
func contents(t *testing.T, deb string) (files map[string]entry, dirs map[string]entry) {
	t.Helper()
	files, dirs = map[string]entry{}, map[string]entry{}
	for _, line := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "--contents", deb)), "\n") {
		// drwxr-xr-x root/root 0 2026-11-29 14:09 ./etc/
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb --contents line %q", line)
		}
		path := strings.TrimPrefix(f[5], ".")
		if strings.HasPrefix(f[0], "d") {
			dirs[strings.TrimSuffix(path, "/")] = entry{f[0], f[1]}
		} else {
			files[path] = entry{f[0], f[1]}
		}
	}
	return files, dirs
}

// TestPackageContents: exactly the expected files, with their modes and
// owners, the conffiles and the maintainer scripts.
func TestPackageContents(t *testing.T) {
	debs := built(t)
	for _, s := range specs {
		t.Run(s.name, func(t *testing.T) {
			want := map[string]entry{
				"/usr/share/doc/" + s.name + "/copyright":    {"-rw-r--r--", "root/root"},
				"/usr/share/doc/" + s.name + "/changelog.gz": {"-rw-r--r--", "root/root"},
				"/usr/share/lintian/overrides/" + s.name:     {"-rw-r--r--", "root/root"},
			}
			for _, b := range s.binaries {
				want["/usr/bin/"+b] = entry{"-rwxr-xr-x", "root/root"}
			}
			if s.unit != "" {
				want["/lib/systemd/system/"+s.unit] = entry{"-rw-r--r--", "root/root"}
			}
			if s.conffile != "" {
				// Secrets (the database URL's password) are read by systemd
				// as root only.
				want[s.conffile] = entry{"-rw-------", "root/root"}
			}
			files, dirs := contents(t, debs[s.name])
			for path, w := range want {
				if got, ok := files[path]; !ok {
					t.Errorf("%s missing", path)
				} else if got != w {
					t.Errorf("%s is %s %s, want %s %s", path, got.mode, got.owner, w.mode, w.owner)
				}
			}
			for path := range files {
				if _, ok := want[path]; !ok {
					t.Errorf("unexpected file %s", path)
				}
			}
			for path, d := range dirs {
				if d != (entry{"drwxr-xr-x", "root/root"}) {
					t.Errorf("directory %s is %s %s, want drwxr-xr-x root/root", path, d.mode, d.owner)
				}
			}

			control := t.TempDir()
			run(t, "dpkg-deb", "--control", debs[s.name], control)
			conffiles, err := os.ReadFile(filepath.Join(control, "conffiles"))
			switch {
			case s.conffile == "" && !errors.Is(err, os.ErrNotExist):
				t.Errorf("conffiles %q (%v), want none", conffiles, err)
			case s.conffile != "" && string(conffiles) != s.conffile+"\n":
				t.Errorf("conffiles %q (%v), want %q", conffiles, err, s.conffile+"\n")
			}
			for _, script := range []string{"preinst", "postinst", "prerm", "postrm"} {
				fi, err := os.Stat(filepath.Join(control, script))
				// The daemons' packages have all but preinst (nothing needs
				// doing before their files land); the command line has none.
				wantScript := s.unit != "" && script != "preinst"
				switch {
				case wantScript && err != nil:
					t.Errorf("%s: %v", script, err)
				case wantScript && fi.Mode().Perm() != 0o755:
					t.Errorf("%s mode %v, want 0755", script, fi.Mode().Perm())
				case !wantScript && err == nil:
					t.Errorf("unexpected %s", script)
				}
			}
		})
	}
}

// unpacked unpacks every package into a throwaway root, as dpkg would lay
// their files (the maintainer scripts are tested on their own), and returns
// it.
func unpacked(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, deb := range built(t) {
		run(t, "dpkg-deb", "--extract", deb, root)
	}
	return root
}

// execLine matches a unit's Exec*= line: the program, after systemd's
// optional prefixes (-, @, :, +, !).
var execLine = regexp.MustCompile(`(?m)^(Exec[A-Za-z]*)=[-@:+!]*(\S+)`)

// TestPackagedUnits: the packaged units run the binaries where the packages
// put them, and as the user the coordinator's package creates.
func TestPackagedUnits(t *testing.T) {
	root := unpacked(t)
	for _, s := range specs {
		if s.unit == "" {
			continue
		}
		t.Run(s.name, func(t *testing.T) {
			unit, err := os.ReadFile(filepath.Join(root, "lib/systemd/system", s.unit))
			if err != nil {
				t.Fatal(err)
			}
			var started bool
			for _, m := range execLine.FindAllStringSubmatch(string(unit), -1) {
				key, program := m[1], m[2]
				if strings.HasPrefix(program, "/usr/local/") {
					t.Errorf("%s runs %s, which no package installs", key, program)
					continue
				}
				name := path.Base(program)
				if !strings.HasPrefix(name, "execq") {
					continue // e.g. ExecReload=/bin/kill
				}
				if !slices.Contains(s.binaries, name) || program != "/usr/bin/"+name {
					t.Errorf("%s runs %s; %s installs %s in /usr/bin", key, program, s.name, strings.Join(s.binaries, ", "))
					continue
				}
				fi, err := os.Stat(filepath.Join(root, program))
				if err != nil || fi.Mode().Perm()&0o111 == 0 {
					t.Errorf("%s runs %s: not an executable in the unpacked package (%v)", key, program, err)
				}
				started = started || key == "ExecStart"
			}
			if !started {
				t.Errorf("no ExecStart runs the package's binary")
			}
			// The coordinator's package creates the execq user; a unit that
			// names any other (but root) would not start.
			for _, m := range regexp.MustCompile(`(?m)^User=(\S+)`).FindAllStringSubmatch(string(unit), -1) {
				if m[1] != "root" && (s.name != "execq-coordinator" || m[1] != "execq") {
					t.Errorf("User=%s: the package creates no such user", m[1])
				}
			}
		})
	}
}

// TestUnpackedBinaries: the binaries run from the unpacked root, the command
// line reports the packages' version, and the example environment files set
// only variables the daemons know.
func TestUnpackedBinaries(t *testing.T) {
	root := unpacked(t)
	bin := func(name string) string { return filepath.Join(root, "usr/bin", name) }

	if got := run(t, bin("execq"), "version"); !strings.HasPrefix(got, "execq "+build.version+" ") {
		t.Errorf("execq version = %q, want execq %s …", got, build.version)
	}
	// Each flag's help names its variable: [$EXECQ_…].
	known := func(help string) map[string]bool {
		vars := map[string]bool{}
		for _, m := range regexp.MustCompile(`\[\$(EXECQ_[A-Z0-9_]+)\]`).FindAllStringSubmatch(help, -1) {
			vars[m[1]] = true
		}
		return vars
	}
	run(t, bin("execq-coordinator"), "-h")
	for file, help := range map[string]string{
		"etc/execq/coordinator.env": run(t, bin("execq-coordinator"), "serve", "-h"),
		"etc/execq/agent.env":       run(t, bin("execq-agent"), "-h"),
	} {
		vars := known(help)
		if len(vars) == 0 {
			t.Fatalf("no EXECQ_ variables in the help for %s:\n%s", file, help)
		}
		env, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		var set int
		for _, line := range strings.Split(string(env), "\n") {
			// Set (KEY=value) or offered commented out (#KEY=value).
			name, _, ok := strings.Cut(strings.TrimPrefix(line, "#"), "=")
			if !ok || strings.ContainsAny(name, " \t") {
				continue
			}
			if !vars[name] {
				t.Errorf("%s: %s is no variable of the daemon", file, name)
			}
			if !strings.HasPrefix(line, "#") {
				set++
			}
		}
		if set == 0 {
			t.Errorf("%s sets nothing", file)
		}
	}
}

// TestLintian: Debian's package checker finds nothing to say beyond the
// overrides each package ships (packaging/lintian/, each with its reason).
func TestLintian(t *testing.T) {
	debs := built(t)
	need(t, "lintian", "lintian")
	ctx, cancel := context.WithTimeout(t.Context(), lintianTimeout)
	defer cancel()
	args := []string{"--pedantic", "--display-info", "--fail-on", "error,warning"}
	for _, s := range specs {
		args = append(args, debs[s.name])
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "lintian", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("lintian:\n%s%s", stdout.String(), stderr.String())
	if err != nil {
		t.Errorf("lintian: %v", err)
	}
	// Errors, warnings, information, pedantic and experimental tags, and
	// overrides that no longer match (unused-override is an I: tag).
	if tags := regexp.MustCompile(`(?m)^[EWIPX]: .*$`).FindAllString(stdout.String(), -1); len(tags) > 0 {
		t.Errorf("lintian tags:\n%s", strings.Join(tags, "\n"))
	}
}
