#!/bin/sh
# Soak run (issue 9, item 14): the real edge, two connector replicas behind a relay losing
# 1 % of the packets each way, a client under steady load, and a connector restart every
# RESTART_EVERY seconds, for SECONDS. Prints a SOAK line every 10 s and MEASURED lines at
# the end (memory growth after warm-up, file descriptors), and fails if a request failed,
# the edge's memory grew 10 % or more after warm-up, or its descriptors kept growing.
#
#   benches/soak.sh [SECONDS] [RESTART_EVERY]      # defaults: 1800 300
#
# The log goes to stderr; keep it with `benches/soak.sh 1800 2>&1 | tee soak.log`.
set -eu
cd "$(dirname "$0")/.."
ZT_SOAK_SECS="${1:-1800}" ZT_SOAK_RESTART_SECS="${2:-300}" RUST_LOG="${RUST_LOG:-warn,zt::client=info}" \
    exec nice -n 10 cargo test -p zt-examples --test it -- --ignored --nocapture --exact soak::soak_with_loss_and_connector_restarts
