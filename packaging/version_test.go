package packaging

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// history is a throwaway git repository holding a copy of version.sh, so
// that tags and commits can be made at will.
type history struct {
	t   *testing.T
	dir string
}

func newHistory(t *testing.T) *history {
	t.Helper()
	need(t, "git", "git")
	h := &history{t: t, dir: t.TempDir()}
	script, err := os.ReadFile("version.sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(h.dir, "packaging"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeExecutable(t, filepath.Join(h.dir, "packaging/version.sh"), string(script))
	return h
}

// env keeps git away from the caller's configuration and from any
// repository above the throwaway one.
func (h *history) env(extra ...string) []string {
	return append(os.Environ(), append([]string{
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_CEILING_DIRECTORIES=" + filepath.Dir(h.dir),
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.invalid",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.invalid",
		"VERSION=",
	}, extra...)...)
}

func (h *history) git(args ...string) string {
	h.t.Helper()
	return h.gitEnv(nil, args...)
}

func (h *history) gitEnv(env []string, args ...string) string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir, cmd.Env = h.dir, h.env(env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		h.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit makes a commit at the given time (UTC) and returns its id.
func (h *history) commit(date string) string {
	h.t.Helper()
	h.gitEnv([]string{"GIT_AUTHOR_DATE=" + date, "GIT_COMMITTER_DATE=" + date},
		"commit", "--allow-empty", "--no-gpg-sign", "-q", "-m", date)
	return h.git("rev-parse", "HEAD")
}

// version runs version.sh; ok is false when it refused.
func (h *history) version(env ...string) (v string, ok bool) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(h.dir, "packaging/version.sh"))
	cmd.Env = h.env(env...)
	out, err := cmd.Output()
	if exit := (*exec.ExitError)(nil); err != nil && !errors.As(err, &exit) {
		h.t.Fatal(err)
	}
	return strings.TrimSpace(string(out)), err == nil
}

// TestVersion: versions from git history are Debian versions that sort in
// the order of the commits, whatever was tagged.
func TestVersion(t *testing.T) {
	need(t, "dpkg", "dpkg")
	h := newHistory(t)

	if v, ok := h.version(); !ok || v != "0.0.0~unknown" {
		t.Errorf("outside git: %q (ok %v), want 0.0.0~unknown", v, ok)
	}

	h.git("init", "-q")
	first := h.commit("2026-01-02T03:04:05Z")
	var versions []string
	step := func(what, want string) {
		t.Helper()
		v, ok := h.version()
		if !ok || v != want {
			t.Fatalf("%s: version %q (ok %v), want %q", what, v, ok, want)
		}
		run(t, "dpkg", "--validate-version", v)
		versions = append(versions, v)
	}
	step("no tag", "0.0.0~git20260102030405."+first[:12])
	h.git("tag", "v1.2.0")
	step("at a tag", "1.2.0")
	second := h.commit("2026-02-03T04:05:06Z")
	step("after a tag", "1.2.0+git20260203040506."+second[:12])
	third := h.commit("2026-02-03T04:05:07Z")
	step("a second later", "1.2.0+git20260203040507."+third[:12])
	h.commit("2026-03-01T00:00:00Z")
	h.git("tag", "v1.3.0-rc1")
	step("at a pre-release tag", "1.3.0~rc1")
	h.commit("2026-03-02T00:00:00Z")
	h.git("tag", "v1.3.0")
	step("at the release", "1.3.0")
	// Tags that are not versions are ignored.
	fourth := h.commit("2026-04-01T00:00:00Z")
	h.git("tag", "deployed")
	step("past a tag that is no version", "1.3.0+git20260401000000."+fourth[:12])

	for i := 1; i < len(versions); i++ {
		run(t, "dpkg", "--compare-versions", versions[i-1], "lt", versions[i])
	}

	if v, ok := h.version("VERSION=v2.0.0"); !ok || v != "2.0.0" {
		t.Errorf("VERSION=v2.0.0: %q (ok %v), want 2.0.0", v, ok)
	}
	for _, bad := range []string{"2.0-1", "next", "v", "1.0 beta"} {
		if v, ok := h.version("VERSION=" + bad); ok {
			t.Errorf("VERSION=%q accepted as %q; Debian would refuse it", bad, v)
		}
	}
	if !regexp.MustCompile(`^[0-9]`).MatchString(versions[0]) {
		t.Errorf("%q does not start with a digit", versions[0])
	}
}
