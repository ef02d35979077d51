// Package envflag binds command-line flags to EXECQ_* environment
// variables, one convention for every execq binary:
//
//   - precedence: the default, then the variable, then the flag;
//   - an empty variable is the same as an unset one (systemd units and
//     shells often set empty values);
//   - a malformed variable is an error naming it;
//   - help lists each flag as --name with its variable as [$EXECQ_NAME];
//   - -h or --help prints the help on stdout and Parse returns
//     flag.ErrHelp, which the binary turns into exit status 0; a bad flag
//     prints the help on stderr, and the binary exits 1.
package envflag
