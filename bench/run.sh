#!/usr/bin/env bash
# Builds the release binaries the benchmarks drive (lingerd, linger), then runs them.
# Everything happens in temporary directories with a daemon of their own, which each
# benchmark stops at the end. The ssh and remote (TLS) benchmarks also start a private OpenSSH
# server on loopback (and stop it); they need Debian's openssh-server, and the remote one
# parallel-ssh (Debian's pssh), and the copy one scp's sftp-server (openssh-sftp-server),
# installed here if missing.
# Options: --scale N (sessions for scale_bench, default 2000; the goal is stated for 10000),
# --baseline REV (scale_bench also measures that git revision, built in a temporary worktree).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scale=2000
baseline=""
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) scale="$2"; shift 2 ;;
    --baseline) baseline="$2"; shift 2 ;;
    *) echo "bench/run.sh: unknown option $1 (use --scale N, --baseline REV)" >&2; exit 2 ;;
  esac
done
need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v parallel-ssh >/dev/null || need+=(pssh)
[ -x /usr/lib/openssh/sftp-server ] || need+=(openssh-sftp-server)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
cargo build --release --workspace
cargo bench -p linger-cli --bench linger_bench
cargo bench -p linger-cli --bench ssh_bench
cargo bench -p linger-cli --bench remote_bench
cargo bench -p linger-cli --bench copy_bench
if [ -n "$baseline" ]; then
  work="$(mktemp -d)"
  trap 'git worktree remove --force "$work/src" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
  git worktree add --detach "$work/src" "$baseline" >/dev/null
  (cd "$work/src" && CARGO_TARGET_DIR="$work/target" cargo build --release -p lingerd -p linger-cli)
  export LINGER_SCALE_BASELINE="$work/target/release"
fi
LINGER_SCALE_SESSIONS="$scale" cargo bench -p linger-cli --bench scale_bench
