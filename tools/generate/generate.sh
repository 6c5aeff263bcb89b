#!/usr/bin/env bash
# The one command that regenerates everything generated in this repository:
# protobuf TypeScript (ts-proto) and the Prisma client.
set -euo pipefail
here="$(dirname "$0")"
bash "$here/protos.sh"
bash "$here/prisma.sh"
