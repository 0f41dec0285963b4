#!/usr/bin/env bash
# Recomputes flake.nix's wheelsHash: the NAR hash of what the `wheels` derivation
# downloads from requirements.lock on x86_64-linux and on aarch64-linux. `make lock`
# runs it after compiling the locks; it needs the network, Nix (`nix hash path`) and a
# Python 3.11.
#
# The derivation runs `pip download --no-deps --require-hashes` with nixpkgs' CPython
# 3.11, so for every locked package pip takes, among the files the lock allows, the one
# whose wheel tag that interpreter ranks best. Here the same download runs for each
# target with `--python-version 3.11 --implementation cp --abi cp311 --abi abi3
# --abi none` (the ABIs nixpkgs' CPython 3.11 reports) and one `--platform` per
# platform tag that CPython on the pinned nixpkgs' glibc accepts, best first. They are
# all named because pip takes `--platform manylinux_2_X_arch` literally, without the
# older manylinux versions a real interpreter also accepts. pip then ranks the same
# tags in the interpreter's order but for two things: PyPI serves no `linux_*` wheel,
# so that tag's place changes nothing; and pip moves manylinux2010 and manylinux1 up
# next to manylinux2014 (its own expansion of that --platform). That can change a
# choice only for a file whose best platform tag is older than manylinux_2_17, so the
# script fails on such a file instead of guessing (tests/test_infra_nix.py compares
# the options with this machine's own Python).
#   PYTHON   the Python 3.11 that runs pip (default python3): the lock's environment
#            markers (python_full_version < '3.12', ...) are evaluated by it
#   NIX_BIN  the nix command (default nix)
set -euo pipefail

# glibc of the pinned nixpkgs (nixos-26.05: glibc 2.42). No locked wheel needs more
# than manylinux_2_34, so any glibc from 2.34 on gives the same files.
GLIBC_MINOR=42
SYSTEMS=(x86_64-linux aarch64-linux)
# pip and setuptools for the download. Neither changes which files are chosen (the
# hashes came out the same with pip 25.0.1, 25.3 and 26.3); setuptools >= 70.1 (built-in
# bdist_wheel) is what the one sdist in the lock, docopt, needs for its metadata.
PIP_VERSION=25.3
SETUPTOOLS_VERSION=80.9.0

# The platform tags CPython on glibc 2.<minor> accepts for <arch>, best first, as
# packaging.tags lists them.
platform_tags() {
  local arch="$1" minor="$2" oldest=16
  if [ "$arch" = x86_64 ]; then
    oldest=4
  fi
  echo "linux_$arch"
  for ((; minor > oldest; minor--)); do
    echo "manylinux_2_${minor}_$arch"
    case "$minor" in
      17) echo "manylinux2014_$arch" ;;
      12) echo "manylinux2010_$arch" ;;
      5) echo "manylinux1_$arch" ;;
    esac
  done
}

# pip's options for downloading what nixpkgs' CPython 3.11 on <system> would take.
target_options() {
  local arch="${1%-linux}" tag
  printf '%s\n' --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none
  while read -r tag; do
    printf '%s\n' --platform "$tag"
  done < <(platform_tags "$arch" "$GLIBC_MINOR")
}

# Whether pip and the interpreter rank <wheel file name> alike: it is not a wheel, is
# pure, or has a platform tag from manylinux_2_17 / manylinux2014 up.
ranked_alike() {
  local name="${1##*/}" platforms tag
  [[ "$name" == *.whl ]] || return 0
  platforms="${name%.whl}"
  platforms="${platforms##*-}"
  for tag in ${platforms//./ }; do
    if [[ "$tag" == any || "$tag" == manylinux2014_* ]] ||
      [[ "$tag" =~ ^manylinux_2_([0-9]+)_ && "${BASH_REMATCH[1]}" -ge 17 ]]; then
      return 0
    fi
  done
  return 1
}

# Rewrites `<system> = ...;` inside flake.nix's `wheelsHash = { ... };` block.
set_wheels_hash() {
  local flake="$1" system="$2" hash="$3" updated
  if ! [[ "$hash" =~ ^sha256-[A-Za-z0-9+/]{43}=$ ]]; then
    echo "not an SRI sha256 hash: $hash" >&2
    return 1
  fi
  updated="$(mktemp "$flake.XXXXXX")"
  if ! awk -v target="$system" -v hash="$hash" '
    /^[[:space:]]*wheelsHash = \{[[:space:]]*$/ { inside = 1 }
    inside && $1 == target && $2 == "=" { sub(/=.*/, "= \"" hash "\";"); found++ }
    inside && /^[[:space:]]*\};[[:space:]]*$/ { inside = 0 }
    { print }
    END { exit found == 1 ? 0 : 1 }
  ' "$flake" >"$updated"; then
    rm -f "$updated"
    echo "$flake: expected exactly one \"$system = ...;\" line in wheelsHash" >&2
    return 1
  fi
  cat "$updated" >"$flake"
  rm -f "$updated"
}

main() {
  cd "$(dirname "$0")/.."
  local python="${PYTHON:-python3}" nix="${NIX_BIN:-nix}" system hash file
  if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "$python is not Python 3.11: the lock's markers must be evaluated by 3.11 (set PYTHON)" >&2
    exit 1
  fi
  if ! command -v "$nix" >/dev/null 2>&1; then
    echo "$nix not found: install Nix (Debian: nix-bin) to refresh flake.nix's wheelsHash" >&2
    exit 1
  fi
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  "$python" -m venv "$work/venv"
  "$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "pip==$PIP_VERSION" "setuptools==$SETUPTOOLS_VERSION"
  for system in "${SYSTEMS[@]}"; do
    local options=()
    mapfile -t options < <(target_options "$system")
    "$work/venv/bin/python" -m pip download --quiet --disable-pip-version-check \
      --no-deps --require-hashes --no-build-isolation "${options[@]}" \
      --dest "$work/$system" --requirement requirements.lock
    for file in "$work/$system"/*; do
      if ! ranked_alike "$file"; then
        echo "${file##*/}: pip may rank this older manylinux wheel unlike CPython; check by hand" >&2
        exit 1
      fi
    done
    hash="$("$nix" --extra-experimental-features nix-command hash path --type sha256 --sri \
      "$work/$system")"
    set_wheels_hash flake.nix "$system" "$hash"
    echo "wheelsHash.$system = $hash ($(find "$work/$system" -type f | wc -l) files)"
  done
}

# Sourced (as the tests do), it only defines the functions above.
if ! (return 0 2>/dev/null); then
  main "$@"
fi
