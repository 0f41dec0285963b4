#!/usr/bin/env bash
# Install and enable the systemd unit that runs the stack from this checkout.
#   sudo scripts/install-systemd.sh [--gpu] [--no-enable] [--unit-dir DIR] [--docker PATH]
# --unit-dir and --no-enable let the unit be rendered somewhere else (tests).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
unit_name="voice-agent.service"
template="$here/systemd/$unit_name"
unit_dir="/etc/systemd/system"
compose_file=""
enable=1
docker_bin=""

die() { echo "install: $*" >&2; exit 1; }

# shellcheck source=scripts/settings.sh
. "${BASH_SOURCE[0]%/*}/settings.sh"

while [ "$#" -gt 0 ]; do
  case "$1" in
    --gpu) compose_file="compose.yaml:compose.gpu.yaml" ;;
    --no-enable) enable=0 ;;
    --unit-dir) [ "$#" -ge 2 ] || die "--unit-dir needs a directory"; unit_dir="$2"; shift ;;
    --docker) [ "$#" -ge 2 ] || die "--docker needs a path"; docker_bin="$2"; shift ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (try --help)" ;;
  esac
  shift
done

[ -f "$template" ] || die "missing $template"
if [ -z "$compose_file" ]; then
  # Without --gpu, keep a COMPOSE_FILE chosen in .env or the environment (the unit's
  # value would hide it).
  compose_file="$(cd "$here" && setting COMPOSE_FILE compose.yaml)"
fi
case "$compose_file" in
  *[!A-Za-z0-9._:/-]*) die "COMPOSE_FILE '$compose_file' has characters this script does not accept" ;;
esac
case "$here" in
  *[[:space:]\|\&\\]*) die "the checkout path '$here' contains a space, '|', '&' or '\\': move the checkout to a plain path" ;;
esac

if [ -z "$docker_bin" ]; then
  docker_bin="$(command -v docker || true)"
  [ -n "$docker_bin" ] || die "docker not found on PATH: install Docker Engine first"
fi
[ -x "$docker_bin" ] || die "$docker_bin is not an executable file"

if [ "$enable" -eq 1 ]; then
  [ "$(id -u)" -eq 0 ] || die "needs root to write $unit_dir: run 'sudo make install'"
  command -v systemctl >/dev/null || die "systemctl not found: this machine does not run systemd"
fi

mkdir -p "$unit_dir"
tmp="$(mktemp "$unit_dir/.$unit_name.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
sed -e "s|@INSTALL_DIR@|$here|g" \
    -e "s|@DOCKER@|$docker_bin|g" \
    -e "s|@COMPOSE_FILE@|$compose_file|g" \
    "$template" > "$tmp"
if grep -q '@[A-Z_]*@' "$tmp"; then
  die "unreplaced placeholder in $template"
fi
chmod 0644 "$tmp"
mv "$tmp" "$unit_dir/$unit_name"
trap - EXIT
echo "install: wrote $unit_dir/$unit_name (COMPOSE_FILE=$compose_file)"

if [ "$enable" -eq 1 ]; then
  systemctl daemon-reload
  systemctl enable --now "$unit_name"
  echo "install: enabled and started $unit_name; logs: journalctl -u $unit_name -f"
fi
