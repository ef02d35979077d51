// Package certreload keeps a TLS certificate and key pair loaded from files
// and re-reads it when asked (SIGHUP) or when either file changes, so a
// renewed certificate is served, or presented, without a restart and
// without dropping connections: tls.Config asks for the pair on every
// handshake, and connections already established keep the one they were
// made with.
//
// A new pair that does not load (half-written files, a key that does not
// match, garbage) is refused and the last good pair stays in use; the
// failure is logged at Error so the operator learns the renewal did not
// take.
package certreload
