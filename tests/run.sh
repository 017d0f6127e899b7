#!/bin/sh
# urun's whole test suite: unit tests and end-to-end tests against the real Docker
# daemon as real users. Run as root from anywhere: tests/run.sh
set -eu
cd "$(dirname "$0")/.."
tests/setup.sh
cargo build --all-targets --locked
cargo test --all-targets --locked -- --test-threads=1
