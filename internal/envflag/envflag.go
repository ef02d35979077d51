package envflag

import (
	"bytes"
	"encoding"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// Set is a flag set whose flags may fall back to environment variables.
type Set struct {
	// Synopsis is the first help line after "usage: ", e.g.
	// "execq-agent [flags]".
	Synopsis string
	// Notes follow the flag list in the help.
	Notes string
	// Stdout receives the help asked for with -h; Stderr the help that
	// follows a bad flag. os.Stdout and os.Stderr by default.
	Stdout, Stderr io.Writer

	fs     *flag.FlagSet
	getenv func(string) string
	errs   []error
	help   bytes.Buffer
}

// New returns an empty Set named name that reads variables with getenv
// (os.Getenv if nil).
func New(name string, getenv func(string) string) *Set {
	if getenv == nil {
		getenv = os.Getenv
	}
	s := &Set{Synopsis: name + " [flags]", Stdout: os.Stdout, Stderr: os.Stderr,
		fs: flag.NewFlagSet(name, flag.ContinueOnError), getenv: getenv}
	// The flag package writes a bad flag's error to the output, then calls
	// Usage: discard the former (the binary prints the returned error
	// once, last) and keep the help for Parse to route.
	s.fs.SetOutput(io.Discard)
	s.fs.Usage = func() { s.PrintHelp(&s.help) }
	return s
}

// FlagSet is the underlying flag set, e.g. for Args after Parse.
func (s *Set) FlagSet() *flag.FlagSet { return s.fs }

// lookup returns the variable's value, "" meaning unset. env "" names no
// variable: the flag has none.
func (s *Set) lookup(env string) string {
	if env == "" {
		return ""
	}
	return s.getenv(env)
}

func (s *Set) usage(env, usage string) string {
	if env == "" {
		return usage
	}
	return usage + " [$" + env + "]"
}

// bad records a malformed variable; Parse reports it.
func (s *Set) bad(env, v, want string) {
	s.errs = append(s.errs, fmt.Errorf("%s=%q: want %s", env, v, want))
}

// String binds a string flag to *p, falling back to env.
func (s *Set) String(p *string, name, env, usage string) {
	if v := s.lookup(env); v != "" {
		*p = v
	}
	s.fs.StringVar(p, name, *p, s.usage(env, usage))
}

// Int binds an int flag to *p, falling back to env.
func (s *Set) Int(p *int, name, env, usage string) {
	if v := s.lookup(env); v != "" {
		if n, err := strconv.Atoi(v); err != nil {
			s.bad(env, v, "an integer")
		} else {
			*p = n
		}
	}
	s.fs.IntVar(p, name, *p, s.usage(env, usage))
}

// Int64 binds an int64 flag to *p, falling back to env.
func (s *Set) Int64(p *int64, name, env, usage string) {
	if v := s.lookup(env); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err != nil {
			s.bad(env, v, "an integer")
		} else {
			*p = n
		}
	}
	s.fs.Int64Var(p, name, *p, s.usage(env, usage))
}

// Duration binds a duration flag to *p, falling back to env.
func (s *Set) Duration(p *time.Duration, name, env, usage string) {
	if v := s.lookup(env); v != "" {
		if d, err := time.ParseDuration(v); err != nil {
			s.bad(env, v, "a duration like 30s or 2m")
		} else {
			*p = d
		}
	}
	s.fs.DurationVar(p, name, *p, s.usage(env, usage))
}

// Bool binds a boolean flag to *p, falling back to env.
func (s *Set) Bool(p *bool, name, env, usage string) {
	if v := s.lookup(env); v != "" {
		if b, err := strconv.ParseBool(v); err != nil {
			s.bad(env, v, "true or false")
		} else {
			*p = b
		}
	}
	s.fs.BoolVar(p, name, *p, s.usage(env, usage))
}

// TextValue is a value with a text form both ways, such as slog.Level.
type TextValue interface {
	encoding.TextMarshaler
	encoding.TextUnmarshaler
}

// Text binds a flag parsed by p's UnmarshalText to p, falling back to
// env; want describes the accepted values for a malformed variable's
// error.
func (s *Set) Text(p TextValue, name, env, want, usage string) {
	if v := s.lookup(env); v != "" {
		if err := p.UnmarshalText([]byte(v)); err != nil {
			s.bad(env, v, want)
		}
	}
	s.fs.TextVar(p, name, p, s.usage(env, usage))
}

// Parse parses args. -h or --help prints the help on Stdout and returns
// flag.ErrHelp; a bad flag prints the help on Stderr and returns the error
// for the caller to print. A
// malformed variable is reported after the flags, so -h always works.
func (s *Set) Parse(args []string) error {
	s.help.Reset()
	err := s.fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		_, _ = s.help.WriteTo(s.Stdout)
		return err
	case err != nil:
		_, _ = s.help.WriteTo(s.Stderr)
		return err
	}
	return errors.Join(s.errs...)
}

// PrintHelp writes the synopsis, the flags and the notes to w.
func (s *Set) PrintHelp(w io.Writer) {
	fmt.Fprintf(w, "usage: %s\n", s.Synopsis)
	first := true
	s.fs.VisitAll(func(f *flag.Flag) {
		if first {
			fmt.Fprintln(w, "\nflags:")
			first = false
		}
		typ, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		switch f.DefValue {
		case "", "0", "0s", "false":
		default:
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
	if s.Notes != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(s.Notes, "\n"))
	}
}
