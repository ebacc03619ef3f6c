#!/usr/bin/env bash
# Checks zt's X25519MLKEM768 key exchange against OpenSSL, in both directions, over real
# TLS 1.3 (zt-proto/src/transport/hybrid_kx_openssl.rs). Not part of CI: it installs
# pyOpenSSL and cryptography (whose wheel bundles OpenSSL 3.5+) from the Python package
# index into a venv. Usage, from anywhere: zt-proto/tests/openssl_kx/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${ZT_OPENSSL_VENV:-${TMPDIR:-/tmp}/zt-openssl-kx-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet 'cryptography==50.0.2' 'pyOpenSSL==26.4.0'
cd "$here/../../.."
ZT_OPENSSL_PYTHON="$venv/bin/python" \
  cargo test -p zt-proto --lib -- --ignored hybrid_kx_openssl --nocapture
