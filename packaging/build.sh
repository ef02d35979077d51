#!/usr/bin/env bash
# build.sh builds the Debian packages: execq-coordinator, execq-agent and
# execq-cli. It is what `make package` runs, and what the packaging test runs
# into a temporary directory.
#
#   packaging/build.sh [OUT_DIR]      (default dist/)
#
# Environment:
#   VERSION     the packages' version, e.g. 1.2.0 (a leading v is dropped).
#               Default: from `git describe` (packaging/version.sh says how);
#               it always starts with a digit, as Debian requires.
#   MAINTAINER  the packages' Maintainer field (default: a placeholder at the
#               reserved .invalid domain: set your own when you publish them).
#   GOARCH      the architecture to build for (default: this machine's).
#
# nfpm writes the .deb files: it needs no Debian tooling, root or fakeroot,
# and it sets owners and modes from its configuration (packaging/nfpm/).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"

OUT="${1:-dist}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

# nfpm is run at a pinned version with `go run …@version` rather than as a
# `tool` directive in go.mod: the tool directive puts nfpm's whole module graph
# (about 55 more requirements) into the product's go.mod, grows go.sum from 95
# to 224 lines, raises a module the product itself links (spf13/pflag), and
# doubles `go mod download` in .ci/run (6.5 s to 13.7 s, 101 to 363 MB of
# module cache, measured from an empty cache) for a tool only `make package`
# uses. `go run …@version` leaves go.mod alone, verifies what it downloads
# against the checksum database like any module, and the build cache keeps
# the built nfpm, so only the first run compiles it.
NFPM_VERSION=v2.45.2
nfpm() { go run "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION" "$@"; }

in_git() { git rev-parse --git-dir >/dev/null 2>&1; }

VERSION="$(packaging/version.sh)"
ARCH="${GOARCH:-$(go env GOARCH)}"
MAINTAINER="${MAINTAINER:-execq maintainers <maintainers@execq.invalid>}"
if in_git; then
	SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)}"
	COMMIT="$(git rev-parse HEAD)"
else
	SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(date +%s)}"
	COMMIT=unknown
fi
# nfpm stamps every file and the archives with SOURCE_DATE_EPOCH.
export SOURCE_DATE_EPOCH

STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT

echo "package: version $VERSION ($ARCH) into $OUT"

# Static binaries (no cgo: the packages then depend on no libc version), no
# build paths, no symbol tables (Debian ships stripped binaries). The command
# line reports VERSION; the daemons carry the commit in their build
# information (`go version -m /usr/bin/execq-agent`).
mkdir -p "$STAGE/bin"
for cmd in coordinator/cmd/execq-coordinator agent/cmd/execq-agent cli/cmd/execq; do
	CGO_ENABLED=0 GOOS=linux GOARCH="$ARCH" go build -trimpath -buildvcs=auto \
		-ldflags "-s -w -X github.com/execq/execq/cli/app.Version=$VERSION" \
		-o "$STAGE/bin/" "./$cmd"
done

# The units in systemd/ document a manual install into /usr/local/bin; the
# packages put the binaries in /usr/bin, so the packaged units' Exec lines
# say so (their comments still describe the manual install: a header says
# which applies).
mkdir -p "$STAGE/systemd"
for unit in systemd/*.service; do
	name="${unit##*/}"
	{
		printf '# Installed by the %s package, which puts its binary in /usr/bin.\n' "${name%.service}"
		printf '# Change settings with `systemctl edit %s`, not here:\n' "$name"
		printf '# an upgrade replaces this file. The install steps below are for a\n'
		printf '# manual install without the package.\n#\n'
		sed -E '/^Exec[A-Za-z]*=/ s#/usr/local/bin/#/usr/bin/#g' "$unit"
	} >"$STAGE/systemd/$name"
	if grep -E '^Exec[A-Za-z]*=.*/usr/local/bin' "$STAGE/systemd/$name"; then
		echo "build.sh: $unit still runs something from /usr/local/bin after rewriting" >&2
		exit 1
	fi
done

# Per package: a Debian changelog (one entry: which commit was built) and
# the copyright file, both of which Debian policy asks for in
# /usr/share/doc/<package>/.
changelog_date="$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
for pkg in execq-coordinator execq-agent execq-cli; do
	mkdir -p "$STAGE/doc/$pkg"
	{
		printf '%s (%s) unstable; urgency=medium\n\n' "$pkg" "$VERSION"
		printf '  * Built from commit %s.\n\n' "$COMMIT"
		printf ' -- %s  %s\n' "$MAINTAINER" "$changelog_date"
	} | gzip -9n >"$STAGE/doc/$pkg/changelog.gz"
	cp packaging/copyright "$STAGE/doc/$pkg/copyright"
done

export VERSION ARCH MAINTAINER STAGE
for pkg in execq-coordinator execq-agent execq-cli; do
	nfpm package --config "packaging/nfpm/$pkg.yaml" --packager deb \
		--target "$OUT/${pkg}_${VERSION}_${ARCH}.deb"
done
