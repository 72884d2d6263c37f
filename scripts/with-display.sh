#!/usr/bin/env bash
# Run a command with a display: as is when $DISPLAY is set, else under xvfb-run.
set -euo pipefail
if [ -n "${DISPLAY:-}" ] || ! command -v xvfb-run >/dev/null; then
  exec "$@"
fi
exec xvfb-run -a -s "-screen 0 1600x1000x24" "$@"
