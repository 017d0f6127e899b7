#!/bin/sh
# urun's whole test suite: unit tests and end-to-end tests against the real Docker
# daemon as real users. Run as root from anywhere: tests/run.sh
set -eu
cd "$(dirname "$0")/.."
tests/setup.sh
cargo build --all-targets --locked
# The suite leaves the host's Docker daemon as it found it: no image of its own
# (untagged intermediate images of removed builds included) left behind.
images() { docker images -aq --no-trunc | sort -u; }
before=$(images)
cargo test --all-targets --locked -- --test-threads=1
left=$(images | grep -vxF "$before" || true)
if [ -n "$left" ]; then
  echo "tests/run.sh: the suite left images on the host's Docker daemon:" >&2
  docker image inspect --format '{{.Id}} {{.RepoTags}} created {{.Created}}' $left >&2 || true
  exit 1
fi
