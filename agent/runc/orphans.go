package runc

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ownerFile, in each exec's scratch directory, holds the pid of the agent
// process that started the exec, so a later agent can tell its
// predecessor's leftovers from a live agent's work.
const ownerFile = "agent.pid"

// execDirPattern matches the scratch directories Exec creates.
const execDirPattern = "execq-exec-*"

// ReapOrphans ends programs left running by an earlier agent process that
// died without ending them (SIGKILL, crash, OOM). The coordinator has
// already failed those commands as "agent lost" and will never take their
// output, so a program still running is an orphan: it gets SIGKILL, with
// its process group. Scratch directories of a live agent (another agent
// sharing TempDir) are left alone, and a pid is only signalled if that
// process started when runc wrote its pid file, so a reused pid is never
// hit. It returns how many programs it killed.
func (r *Runner) ReapOrphans(log *slog.Logger) int {
	dirs, err := filepath.Glob(filepath.Join(r.tempDir(), execDirPattern))
	if err != nil {
		return 0
	}
	killed := 0
	for _, dir := range dirs {
		owner := readPid(filepath.Join(dir, ownerFile))
		if owner <= 0 || owner == os.Getpid() || alive(owner) {
			continue // not ours to judge, or a live agent's
		}
		pidFile := filepath.Join(dir, "pid")
		if pid := readPid(pidFile); pid > 0 && startedAround(pid, pidFile) {
			if err := syscall.Kill(-pid, syscall.SIGKILL); err == nil {
				killed++
				log.Warn("killed a program left running by an agent that died", "pid", pid, "exec_dir", dir)
			}
		}
		os.RemoveAll(dir)
	}
	return killed
}

func (r *Runner) tempDir() string {
	if r.TempDir != "" {
		return r.TempDir
	}
	return os.TempDir()
}

func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

// alive reports whether a process with this pid exists.
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}

// startedAround reports whether process pid started within a few seconds
// of pidFile's modification: runc writes the pid file as it starts the
// program, so a process that started at another time has a reused pid.
func startedAround(pid int, pidFile string) bool {
	fi, err := os.Stat(pidFile)
	if err != nil {
		return false
	}
	start, ok := processStart(pid)
	if !ok {
		return false
	}
	d := start.Sub(fi.ModTime())
	return d > -5*time.Second && d < 5*time.Second
}

// processStart reads when a process started, from /proc/<pid>/stat
// (field 22, clock ticks after boot) and the boot time in /proc/stat.
func processStart(pid int) (time.Time, bool) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return time.Time{}, false
	}
	// The command name (field 2) may hold spaces; fields after it start
	// past its closing parenthesis.
	rest := string(stat)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 20 {
		return time.Time{}, false
	}
	ticks, err := strconv.ParseInt(f[19], 10, 64) // field 22 overall
	if err != nil {
		return time.Time{}, false
	}
	boot, ok := bootTime()
	if !ok {
		return time.Time{}, false
	}
	const clkTck = 100 // USER_HZ: 100 on every Linux architecture Go targets here
	return boot.Add(time.Duration(ticks) * time.Second / clkTck), true
}

func bootTime() (time.Time, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			secs, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return time.Unix(secs, 0), err == nil
		}
	}
	return time.Time{}, false
}
