# shellcheck shell=bash
# Sourced by the other scripts: read one setting the way Compose does.

# Value of KEY from the environment, else from .env, else DEFAULT.
setting() {
  local key="$1" default="$2" value=""
  if [ -n "${!key:-}" ]; then
    value="${!key}"
  elif [ -f .env ]; then
    value="$(sed -n "s/^[[:space:]]*${key}[[:space:]]*=[[:space:]]*//p" .env | tail -n 1)"
    value="${value%\"}"; value="${value#\"}"; value="${value%\'}"; value="${value#\'}"
  fi
  echo "${value:-$default}"
}
