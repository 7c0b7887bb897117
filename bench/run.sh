#!/usr/bin/env bash
# Builds the release binaries the benchmark drives (lingerd, linger), then runs it.
# Everything happens in a temporary directory with a daemon of its own, which the
# benchmark stops at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --workspace
cargo bench -p linger-cli --bench linger_bench
