package e2e_test

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/execq/execq/agent/runc/runctest"
	"github.com/execq/execq/shared"
)

// TestManyCommandsExactlyOnce: 20 commands submitted at once across two
// containers all finish, and each ran exactly once — every run appends its
// own token to a log inside its container, which the test reads from the
// host side of the bundle.
func TestManyCommandsExactlyOnce(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	cs := []*runctest.Container{s.container(), s.container()}
	s.startAgent("--concurrency", "4")
	s.waitReported(cs...)

	type sub struct {
		id, token string
		c         *runctest.Container
	}
	var subs []sub
	for i := range 20 {
		c := cs[i%2]
		token := "run-" + string(rune('a'+i))
		rec := s.submit(c.ID, "sh", "-c", "echo $0 >> /tmp/ran.log; echo $0", token)
		subs = append(subs, sub{rec.ID, token, c})
	}
	for _, sb := range subs {
		rec := s.wait(sb.id, 2*time.Minute)
		if rec.Status != shared.StatusSucceeded || rec.Stdout != sb.token+"\n" {
			t.Errorf("%s: status %s stdout %q stderr %q", sb.token, rec.Status, rec.Stdout, rec.Stderr)
		}
	}
	for i, c := range cs {
		raw, err := os.ReadFile(filepath.Join(c.Rootfs, "tmp", "ran.log"))
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Fields(string(raw))
		sort.Strings(got)
		var want []string
		for j, sb := range subs {
			if j%2 == i {
				want = append(want, sb.token)
			}
		}
		sort.Strings(want)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("container %d ran %v, want each of %v exactly once", i, got, want)
		}
	}
}
