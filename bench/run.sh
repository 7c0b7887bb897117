#!/usr/bin/env bash
# Builds the release binaries the benchmarks drive (lingerd, linger), then runs them.
# Everything happens in temporary directories with a daemon of their own, which each
# benchmark stops at the end. The ssh and remote (TLS) benchmarks also start a private OpenSSH
# server on loopback (and stop it); they need Debian's openssh-server, and the remote one
# parallel-ssh (Debian's pssh), installed here if missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v parallel-ssh >/dev/null || need+=(pssh)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
cargo build --release --workspace
cargo bench -p linger-cli --bench linger_bench
cargo bench -p linger-cli --bench ssh_bench
cargo bench -p linger-cli --bench remote_bench
