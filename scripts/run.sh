#!/usr/bin/env bash
# Run a command inside the workspace environment: scripts/run.sh python bench/x.py --quick
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec "$@"
