# shellcheck shell=bash
# Sourced by the other scripts: read one setting the way Compose does.
# Defaults come from the checkout's .env.example (generated from agent/config.py by
# `make docs`), so no script restates them.

settings_example="$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)/.env.example"

# The last KEY=value line of an env file, without surrounding quotes.
env_file_value() {
  local file="$1" key="$2" value=""
  [ -f "$file" ] || return 0
  value="$(sed -n -E "s/^[[:space:]]*(export[[:space:]]+)?${key}[[:space:]]*=[[:space:]]*//p" "$file" | tail -n 1)"
  value="${value%\"}"; value="${value#\"}"; value="${value%\'}"; value="${value#\'}"
  echo "$value"
}

# Value of KEY from the environment, else from .env (in the current directory), else
# its default in .env.example, else DEFAULT. Fails when none of them has a value.
setting() {
  local key="$1" default="${2:-}" value="${!1:-}"
  [ -n "$value" ] || value="$(env_file_value .env "$key")"
  [ -n "$value" ] || value="$(env_file_value "$settings_example" "$key")"
  [ -n "$value" ] || value="$default"
  if [ -z "$value" ]; then
    echo "settings: no value for $key, and $settings_example has no default for it" >&2
    return 1
  fi
  echo "$value"
}

# http or https: how the agent serves its page (Settings.https in agent/config.py).
agent_scheme() {
  local tls host
  tls="$(setting TLS)" || return 1
  host="$(setting AGENT_HOST)" || return 1
  case "${tls,,}" in
    on) echo https ;;
    off) echo http ;;
    *) if is_loopback "$host"; then echo http; else echo https; fi ;;
  esac
}

is_loopback() {
  case "$1" in
    localhost|127.*|::1|0:0:0:0:0:0:0:1) return 0 ;;
    *) return 1 ;;
  esac
}
