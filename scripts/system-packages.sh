#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, or says how to.
#   chromium        real-browser tests (Playwright drives Debian's build; no download)
#   ShellCheck      lints the shell scripts
#   nix-bin         parses and evaluates flake.nix against a stub nixpkgs
#   systemd         systemd-analyze verify for the unit file
#   iproute2        `ip` to bring up loopback in the tests' private network namespace
#   util-linux      `unshare` for that namespace
#   nodejs, npm     Pipecat's web client for its test (only when no npm is on PATH: any
#                   Node.js 18 or newer will do)
#   docker.io       the stack test's own Docker engine (the appliance run for real)
#   iptables        that engine's networks
#   debootstrap     the Debian base image it builds (no image registry is needed)
# Packages named as arguments are installed too.
set -euo pipefail

packages=(chromium shellcheck nix-bin systemd iproute2 util-linux docker.io iptables debootstrap "$@")
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "The tests need these Debian packages (or your system's equivalents): ${missing[*]}" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "The tests need Debian packages that are not installed. Run:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "Installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
