#!/bin/sh
# Builds the golden repository with the git CLI and prints golden_cids.json.
# The Go test builds the same repository with go-git (see golden_test.go);
# keep the two in sync. Usage: sh testdata/golden.sh > testdata/golden_cids.json
set -eu
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"

# Isolate from the user's and system's git configuration.
export HOME="$dir" GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null TZ=UTC
export GIT_AUTHOR_NAME='Ada Lovelace' GIT_AUTHOR_EMAIL='ada@example.com'
export GIT_COMMITTER_NAME='Ada Lovelace' GIT_COMMITTER_EMAIL='ada@example.com'
umask 022

git init -q -b main .
printf '%s\n' '{"name": "acme/hello", "version": "0.1.0", "build": {"command": ["go", "build", "-o", "hello", "."], "binary": "hello"}}' > Cell.json
printf 'package main\n\nfunc main() {}\n' > main.go
git add Cell.json main.go
GIT_AUTHOR_DATE='2024-01-02T03:04:05+02:00' GIT_COMMITTER_DATE='2024-01-02T03:04:05+02:00' \
	git commit -q -m 'initial'

printf '%s\n' '{"name": "acme/hello", "version": "0.2.0", "build": {"command": ["go", "build", "-o", "hello", "."], "binary": "hello"}}' > Cell.json
git add Cell.json
GIT_AUTHOR_DATE='2024-02-03T04:05:06+02:00' GIT_COMMITTER_DATE='2024-02-04T05:06:07-05:00' \
	git commit -q -m 'bump version to 0.2.0'

GIT_COMMITTER_DATE='2024-01-03T10:00:00+05:30' git tag -a v0.1.0 -m 'release 0.1.0' HEAD~1

python3 - "$(git rev-parse HEAD)" "$(git rev-parse HEAD~1)" "$(git rev-parse v0.1.0^{commit})" "$(git rev-parse v0.1.0)" <<'PY'
import base64, json, sys
def cid(sha1):  # CIDv1 (0x01), git-raw (0x78), sha1 (0x11), 20 bytes (0x14)
    raw = bytes([0x01, 0x78, 0x11, 0x14]) + bytes.fromhex(sha1)
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")
head, head1, tag, tagobj = sys.argv[1:]
out = {
    "commits": {name: {"sha1": h, "cid": cid(h)} for name, h in
                [("HEAD", head), ("HEAD~1", head1), ("v0.1.0", tag)]},
    "tag_objects": {"v0.1.0": tagobj},
}
print(json.dumps(out, indent=2))
PY
