// Package packaging holds no Go code: it is where the Debian packages are
// made (build.sh, which `make package` runs, with nfpm configurations,
// maintainer scripts, example environment files and lintian overrides) and
// where they are tested. The test builds the packages as `make package`
// does and checks them as an operator's machine would see them: dpkg-deb's
// view of their files, modes, conffiles and fields, lintian's verdict, the
// binaries run from an unpacked root, the maintainer scripts run for
// install, upgrade, remove and purge with and without a running systemd,
// and a real dpkg install, upgrade, remove and purge in a throwaway overlay
// of the machine's root — recording every service command, none of which
// may start or restart a service.
package packaging
