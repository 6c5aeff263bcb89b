#!/usr/bin/env bash
# Regenerates the TypeScript for proto/ with ts-proto (through buf's own
# compiler, so no protoc is needed) after linting the protos.
set -euo pipefail
cd "$(dirname "$0")/../../proto"
npx --no-install buf lint
rm -rf ../libs/proto/src/gen
npx --no-install buf generate
