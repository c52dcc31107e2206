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
#
# A target that fails without writing a crashing input is run once more: with
# a duration budget, Go 1.26's fuzz coordinator can report a bare "context
# deadline exceeded" at the deadline that no input caused (go.dev/issue/75804).
# A count budget (1000x) never hits it.
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

corpus_dir() { echo "$1/testdata/fuzz/$2"; }

run_target() {
	local dir=$1 target=$2
	corpus_before=$(ls "$(corpus_dir "$dir" "$target")" 2>/dev/null || true)
	go test -run '^$' -fuzz "^${target}\$" -fuzztime "$duration" "$dir"
}

# new_crashers prints the corpus files that the last run_target added.
new_crashers() {
	comm -13 <(echo "$corpus_before") <(ls "$(corpus_dir "$1" "$2")" 2>/dev/null || true) | grep -v '^$' || true
}

failed=()
count=0
for dir in "${dirs[@]}"; do
	mapfile -t targets < <(go test -list '^Fuzz' "$dir" | grep -E '^Fuzz')
	for target in "${targets[@]}"; do
		count=$((count + 1))
		echo "=== fuzz $dir $target for $duration"
		if run_target "$dir" "$target"; then
			continue
		fi
		if [[ -z $(new_crashers "$dir" "$target") ]]; then
			echo "=== fuzz $dir $target failed without a crashing input; running it again"
			run_target "$dir" "$target" && continue
		fi
		failed+=("$dir $target")
	done
done

echo "fuzz: ran $count targets, ${#failed[@]} failed"
if ((${#failed[@]} > 0)); then
	printf '  FAILED %s\n' "${failed[@]}"
	exit 1
fi
