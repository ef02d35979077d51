// Package syncbuf is a bytes.Buffer that several goroutines may write while
// another reads it: a process's output copied by os/exec, a logger, and the
// test polling what was written so far.
package syncbuf
