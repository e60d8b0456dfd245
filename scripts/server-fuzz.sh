#!/usr/bin/env bash
# Fuzz a live KME from docs/openapi.yaml with schemathesis over mutual TLS.
# Fails on a server crash (5xx other than the documented 503), an undocumented status code, a wrong
# content type or a response that breaks the schema. Bounded: MAX_EXAMPLES per operation.
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_EXAMPLES="${MAX_EXAMPLES:-50}"
VENV="${SERVER_FUZZ_VENV:-target/server-fuzz-venv}"
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"

if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# The test profile: the artifacts `cargo test` built are reused.
cargo build --quiet --locked --profile test -p qkd-server --example kme
LAB="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
target/debug/examples/kme "$LAB" "$PORT" >"$LAB/server.log" 2>&1 &
SERVER=$!
cleanup() { kill -INT "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$LAB" .schemathesis; }
trap cleanup EXIT

for _ in $(seq 1 100); do
  grep -q "listening" "$LAB/server.log" 2>/dev/null && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$LAB/server.log"; echo "server did not start" >&2; exit 1; }
  sleep 0.1
done

NO_COLOR=1 "$VENV/bin/schemathesis" run docs/openapi.yaml \
  --url "https://localhost:$PORT" \
  --tls-verify "$LAB/ca.pem" \
  --request-cert "$LAB/SAE_1.pem" \
  --request-cert-key "$LAB/SAE_1.key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$MAX_EXAMPLES" \
  --phases examples,coverage,fuzzing

# The server must still be alive after the run (no crash).
kill -0 "$SERVER"
echo "server-fuzz: passed"
