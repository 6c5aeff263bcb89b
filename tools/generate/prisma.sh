#!/usr/bin/env bash
# Regenerates the Prisma client into libs/db/src/generated/prisma from
# prisma/schema.prisma. The output is committed; CI runs this and fails on a
# diff, so the run must be offline and reproducible.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo_root"

output_dir="libs/db/src/generated/prisma"
prisma_cli="node_modules/.bin/prisma"

if [[ ! -x "$prisma_cli" ]]; then
  echo "prisma CLI not found at $prisma_cli; run npm ci first" >&2
  exit 1
fi

# The CLI insists on locating the native schema engine even though generate
# never runs it, and downloading it fails offline. Any executable satisfies
# the lookup. An operator who has the real binary can still pass it in.
export PRISMA_SCHEMA_ENGINE_BINARY="${PRISMA_SCHEMA_ENGINE_BINARY:-/bin/true}"
# No update checks or telemetry: they need the network and make output vary.
export CHECKPOINT_DISABLE=1
export PRISMA_HIDE_UPDATE_MESSAGE=1
export PRISMA_DISABLE_WARNINGS=1

# Start from an empty directory so a removed model does not leave a stale file.
rm -rf "$output_dir"
"$prisma_cli" generate --config prisma.config.ts
