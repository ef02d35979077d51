// Package maintest lets a binary's tests run its real main, exit code and
// output included, by re-executing the test binary. The daemons' help and
// usage conventions (exit 0 on -h, 1 on a usage error) are only visible
// there, not in the functions main calls.
package maintest
