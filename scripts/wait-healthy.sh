#!/usr/bin/env bash
# Wait until every service of the stack is healthy, then print the URL to open.
#   scripts/wait-healthy.sh [--timeout SECONDS]      (default 300)
# COMPOSE overrides the Compose command (default "docker compose"), e.g.
# COMPOSE="docker compose -f compose.yaml -f compose.gpu.yaml".
set -euo pipefail

timeout=300
while [ "$#" -gt 0 ]; do
  case "$1" in
    --timeout) [ "$#" -ge 2 ] || { echo "wait-healthy: --timeout needs seconds" >&2; exit 2; }; timeout="$2"; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "wait-healthy: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done

read -r -a compose <<< "${COMPOSE:-docker compose}"
docker_cmd="${compose[0]}"
interval="${WAIT_INTERVAL:-3}"

# shellcheck source=scripts/settings.sh
. "${BASH_SOURCE[0]%/*}/settings.sh"

lan_address() {
  local addr=""
  addr="$(hostname -I 2>/dev/null | awk '{print $1}')" || true
  if [ -z "$addr" ] && command -v ip >/dev/null; then
    # Asks the routing table only; sends nothing.
    addr="$(ip -4 route get 192.0.2.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')" || true
  fi
  echo "${addr:-<server-ip>}"
}

last_health_output() {
  local id
  id="$("${compose[@]}" ps --all --quiet "$1" 2>/dev/null | head -n 1)" || true
  [ -n "$id" ] || return 0
  "$docker_cmd" inspect --format '{{with .State.Health}}{{range .Log}}{{.Output}}{{end}}{{end}}' "$id" 2>/dev/null \
    | tr -s '\n' ' ' | cut -c1-300 || true
}

# A one-shot service (label voice-agent.one-shot, e.g. ollama-init) that exited 0 has
# done its job; any other stopped container is a failure.
finished_one_shot() {
  local id
  id="$("${compose[@]}" ps --all --quiet "$1" 2>/dev/null | head -n 1)" || true
  [ -n "$id" ] || return 1
  [ "$("$docker_cmd" inspect --format '{{index .Config.Labels "voice-agent.one-shot"}} {{.State.ExitCode}}' "$id" 2>/dev/null)" = "true 0" ]
}

start=$(date +%s)
last_report=""
while :; do
  states="$("${compose[@]}" ps --all --format '{{.Service}} {{.State}} {{.Health}}')" \
    || { echo "wait-healthy: '${compose[*]} ps' failed; is Docker running? (make doctor)" >&2; exit 1; }
  if [ -z "$states" ]; then
    echo "wait-healthy: no containers; start the stack first (make up)" >&2
    exit 1
  fi

  pending=""
  while read -r service state health; do
    [ -n "$service" ] || continue
    case "$state" in
      exited|dead)
        if [ "$state" = exited ] && finished_one_shot "$service"; then continue; fi
        echo "wait-healthy: $service has stopped ($state); see 'make logs SERVICE=$service'" >&2
        exit 1 ;;
    esac
    if [ "$state" != "running" ] || { [ -n "$health" ] && [ "$health" != "healthy" ]; }; then
      pending="$pending $service(${health:-$state})"
    fi
  done <<< "$states"

  if [ -z "$pending" ]; then
    break
  fi

  elapsed=$(( $(date +%s) - start ))
  if [ "$elapsed" -ge "$timeout" ]; then
    echo "wait-healthy: not healthy after ${timeout}s:$pending" >&2
    for item in $pending; do
      service="${item%%(*}"
      output="$(last_health_output "$service")"
      [ -z "$output" ] || echo "  $service last health check: $output" >&2
    done
    echo "  Models missing? run 'make models'. Otherwise see 'make logs' and 'make doctor'." >&2
    exit 1
  fi
  if [ "$pending" != "$last_report" ]; then
    echo "waiting (${elapsed}s):$pending"
    last_report="$pending"
  fi
  sleep "$interval"
done

port="$(setting AGENT_PORT)"
http_port="$(setting AGENT_HTTP_PORT)"
host="$(setting AGENT_HOST)"
scheme="$(agent_scheme)"
echo "All services are healthy."
# Where the page is, as the agent serves it: TLS decides the scheme, AGENT_HOST which
# addresses answer, and with HTTPS plain HTTP stays on 127.0.0.1 at AGENT_HTTP_PORT.
if ! is_loopback "$host"; then
  case "$host" in
    0.0.0.0|::) address="$(lan_address)" ;;
    *:*) address="[$host]" ;;
    *) address="$host" ;;
  esac
  if [ "$scheme" = https ]; then
    note="(accept the self-signed certificate once; see README)"
  else
    note="(plain HTTP: browsers there give no microphone; set TLS=auto in .env for HTTPS)"
  fi
  echo "  From a phone or laptop: ${scheme}://${address}:${port}/  $note"
fi
local_urls=()
case "$host" in
  0.0.0.0|::) local_urls+=("${scheme}://localhost:${port}/") ;;
  *) is_loopback "$host" && local_urls+=("${scheme}://localhost:${port}/") ;;
esac
[ "$scheme" = http ] || local_urls+=("http://localhost:${http_port}/")
if [ "${#local_urls[@]}" -gt 0 ]; then
  printf '  On this machine:        %s\n' "${local_urls[0]}${local_urls[1]:+  or  ${local_urls[1]}}"
fi
