// Command execq is the operator's command line of execq: it runs a program
// in a container and shows its output live (execq exec), and reads, waits
// for, cancels and lists commands. See package
// github.com/execq/execq/cli/app for the commands and the exit statuses.
package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/execq/execq/cli/app"
)

func main() {
	// Not signal.NotifyContext: exec gives the first and the second
	// Ctrl-C different meanings.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	os.Exit(app.Main(os.Args[1:], app.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Signals: sigs}))
}
