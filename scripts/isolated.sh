#!/usr/bin/env bash
# Runs a command in a private network namespace that has only loopback, so tests cannot
# send a packet anywhere but 127.0.0.1. Needs root (CI has it); otherwise runs it as is.
set -euo pipefail

if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 \
  && unshare -n true 2>/dev/null; then
  exec unshare -n -- sh -c 'ip link set lo up && exec "$@"' sh "$@"
fi
echo "note: not root (or no unshare): tests run in the normal network namespace" >&2
exec "$@"
