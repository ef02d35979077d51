// Package testpki makes certificate authorities and certificates at test
// time (crypto/x509), written to PEM files in the test's temporary
// directory, so TLS is tested with real handshakes and no key material is
// checked in.
package testpki
