package app

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/execq/execq/shared"
)

// spinner shows "queued 3 s…" on a terminal's stderr while a command waits
// for an agent. It is used only when stderr is a terminal, and is erased
// before the first byte of output or any message, so it never mixes into
// them. A nil *spinner does nothing.
type spinner struct {
	w       io.Writer
	mu      sync.Mutex
	stopped bool
	shown   bool
	cancel  context.CancelFunc
}

var spinnerFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// startSpinner draws until Stop or until status says the command left the
// queue (checked each second).
func startSpinner(ctx context.Context, w io.Writer, since time.Time, status func(context.Context) (shared.Status, error)) *spinner {
	ctx, cancel := context.WithCancel(ctx)
	s := &spinner{w: w, cancel: cancel}
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		lastCheck := time.Now()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if time.Since(lastCheck) >= time.Second {
				lastCheck = time.Now()
				if st, err := status(ctx); err == nil && st != shared.StatusQueued {
					s.Stop()
					return
				}
			}
			s.mu.Lock()
			if !s.stopped {
				fmt.Fprintf(s.w, "\r\033[K%s queued %d s…", spinnerFrames[i%len(spinnerFrames)], int(time.Since(since).Seconds()))
				s.shown = true
			}
			s.mu.Unlock()
		}
	}()
	return s
}

// Stop erases the spinner for good.
func (s *spinner) Stop() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.stopped = true
	s.cancel()
	if s.shown {
		fmt.Fprint(s.w, "\r\033[K")
	}
}

// spinWriter stops the spinner before the first write through it.
type spinWriter struct {
	w  io.Writer
	sp *spinner
}

func (s spinWriter) Write(p []byte) (int, error) {
	s.sp.Stop()
	return s.w.Write(p)
}
