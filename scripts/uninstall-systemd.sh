#!/usr/bin/env bash
# Stop, disable and remove the voice-agent systemd unit. Models and
# certificates stay in their Docker volumes ('docker compose down --volumes'
# deletes them).
#   sudo scripts/uninstall-systemd.sh [--unit-dir DIR]
set -euo pipefail

unit_name="voice-agent.service"
unit_dir="/etc/systemd/system"

die() { echo "uninstall: $*" >&2; exit 1; }

while [ "$#" -gt 0 ]; do
  case "$1" in
    --unit-dir) [ "$#" -ge 2 ] || die "--unit-dir needs a directory"; unit_dir="$2"; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (try --help)" ;;
  esac
  shift
done

unit="$unit_dir/$unit_name"
if [ ! -e "$unit" ]; then
  echo "uninstall: $unit is not installed; nothing to do"
  exit 0
fi

if [ "$unit_dir" = "/etc/systemd/system" ]; then
  [ "$(id -u)" -eq 0 ] || die "needs root to remove $unit: run 'sudo make uninstall'"
  # Stopping runs 'docker compose down' (ExecStop).
  systemctl disable --now "$unit_name" || echo "uninstall: could not stop $unit_name; removing it anyway" >&2
fi
rm -f "$unit"
if [ "$unit_dir" = "/etc/systemd/system" ]; then
  systemctl daemon-reload
fi
echo "uninstall: removed $unit"
