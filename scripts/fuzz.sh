#!/usr/bin/env bash
# Run every Go fuzz target in the repository for DURATION each (default 10s).
#
# Usage: scripts/fuzz.sh [DURATION]      e.g. scripts/fuzz.sh 30s
#
# Targets are discovered per package with `go test -list '^Fuzz'`, looking only
# at packages whose tests declare a Fuzz function so that the whole tree is not
# compiled twice. A failing target does not stop the others; the script exits
# non-zero if any failed, and go test leaves the crashing input under the
# package's testdata/fuzz/ for the seed corpus.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-10s}
if [[ ! $duration =~ ^[0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h|x)$ ]]; then
	echo "usage: $0 [DURATION] (a Go duration such as 30s, or a count such as 1000x)" >&2
	exit 2
fi

mapfile -t dirs < <(grep -rlE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(' . |
	grep -v '^./\.' | xargs -r -n1 dirname | sort -u)
if ((${#dirs[@]} == 0)); then
	echo "fuzz: no fuzz targets found"
	exit 0
fi

failed=()
count=0
for dir in "${dirs[@]}"; do
	mapfile -t targets < <(go test -list '^Fuzz' "$dir" | grep -E '^Fuzz')
	for target in "${targets[@]}"; do
		count=$((count + 1))
		echo "=== fuzz $dir $target for $duration"
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$duration" "$dir"; then
			failed+=("$dir $target")
		fi
	done
done

echo "fuzz: ran $count targets, ${#failed[@]} failed"
if ((${#failed[@]} > 0)); then
	printf '  FAILED %s\n' "${failed[@]}"
	exit 1
fi
