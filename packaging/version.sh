#!/usr/bin/env bash
# version.sh prints the Debian version of the packages built from this tree.
#
#   VERSION set       that, without a leading v (e.g. VERSION=v1.2.0 → 1.2.0)
#   at a tag vX.Y.Z   X.Y.Z (a pre-release tag v1.2.0-rc1 → 1.2.0~rc1)
#   N commits after   X.Y.Z+git<commit time>.<commit>
#   no tag yet        0.0.0~git<commit time>.<commit>
#   no git history    0.0.0~unknown
#
# Debian compares versions so that ~ sorts before anything (1.2.0~rc1 <
# 1.2.0, and 0.0.0~git… < any release) and + after (1.2.0 < 1.2.0+git… <
# 1.2.1); the commit time (UTC, to the second) orders builds of later
# commits after earlier ones. Building the same commit twice gives the same
# version. It fails on a version Debian would refuse.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# commit_time prints HEAD's commit time (not the time of the build).
commit_time() { TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S HEAD; }

version() {
	if [[ -n "${VERSION:-}" ]]; then
		echo "${VERSION#v}"
		return
	fi
	if ! git rev-parse --git-dir >/dev/null 2>&1; then
		echo "0.0.0~unknown"
		return
	fi
	local desc
	if desc="$(git describe --tags --match 'v[0-9]*' --long --abbrev=12 2>/dev/null)" &&
		[[ "$desc" =~ ^v(.+)-([0-9]+)-g([0-9a-f]+)$ ]]; then
		local release="${BASH_REMATCH[1]//-/\~}" count="${BASH_REMATCH[2]}" sha="${BASH_REMATCH[3]}"
		if [[ "$count" == 0 ]]; then
			echo "$release"
		else
			echo "$release+git$(commit_time).$sha"
		fi
		return
	fi
	echo "0.0.0~git$(commit_time).$(git rev-parse --short=12 HEAD)"
}

v="$(version)"
# An upstream version without a Debian revision: a digit first, then
# alphanumerics and . + ~ (a hyphen would start a revision).
if [[ ! "$v" =~ ^[0-9][A-Za-z0-9.+~]*$ ]]; then
	echo "version.sh: '$v' is not a Debian version (a digit first, then letters, digits and . + ~)" >&2
	exit 1
fi
echo "$v"
