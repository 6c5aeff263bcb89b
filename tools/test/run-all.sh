#!/usr/bin/env bash
# The README's test command (`npm test`): lint, typecheck and every test tier
# (unit, integration against real Postgres and NATS, end to end with every
# service as its own process) for every project, then one summary line.
#
# Integration and e2e tests read DATABASE_URL and NATS_URL; when unset they
# default to the local servers DESIGN.md describes, if those answer.
set -uo pipefail
cd "$(dirname "$0")/../.."

probe() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
if [ -z "${DATABASE_URL:-}" ] && probe 127.0.0.1 5432; then export DATABASE_URL=postgres://postgres@127.0.0.1:5432/test; fi
if [ -z "${NATS_URL:-}" ] && probe 127.0.0.1 4222; then export NATS_URL=nats://127.0.0.1:4222; fi
echo "test: DATABASE_URL=${DATABASE_URL:+set} NATS_URL=${NATS_URL:-unset}"
[ -n "${DATABASE_URL:-}" ] || echo "test: no Postgres: integration and e2e tests will be skipped"
[ -n "${NATS_URL:-}" ] || echo "test: no NATS: integration and e2e tests will be skipped"

rm -rf tmp/test-results
export NX_DAEMON=false NX_NO_CLOUD=true NX_TUI=false
npx --no-install nx run-many -t lint typecheck --outputStyle=stream
checks=$?
# Tests run one project at a time: integration tests share one Postgres and
# one NATS, and the e2e test starts every service; on 2 cores that is enough.
npx --no-install nx run-many -t test --parallel=1 --outputStyle=stream
tests=$?

node tools/test/summarise.mjs tmp/test-results
summary=$?
if [ $checks -ne 0 ]; then echo "test: lint or typecheck failed"; fi
[ $checks -eq 0 ] && [ $tests -eq 0 ] && [ $summary -eq 0 ]
