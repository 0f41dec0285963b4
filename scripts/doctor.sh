#!/usr/bin/env bash
# Check that this machine can run the stack; one line per check, and one line
# of explanation for each problem.
#   scripts/doctor.sh [--gpu]
# COMPOSE overrides the Compose command (default "docker compose"); MIN_FREE_GB
# the disk space asked for (default 12, or 25 with --gpu).
set -euo pipefail

# The one place the minimum is set (README, "Prerequisites", says why): 2.24.6 is the
# first release that lets compose.gpu.yaml change a service compose.yaml includes.
min_compose="2.24.6"
gpu=0
case "${1:-}" in
  --gpu) gpu=1 ;;
  "") ;;
  -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
  *) echo "doctor: unknown option '$1'" >&2; exit 2 ;;
esac

read -r -a compose <<< "${COMPOSE:-docker compose}"
failures=0
ok()   { printf 'ok    %s\n' "$*"; }
warn() { printf 'warn  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; failures=$((failures + 1)); }

# shellcheck source=scripts/settings.sh
. "${BASH_SOURCE[0]%/*}/settings.sh"

version_at_least() {  # have, want
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}

port_in_use() {  # bash's /dev/tcp: connects to 127.0.0.1 only
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# 1. Docker CLI and daemon
if ! command -v docker >/dev/null; then
  fail "docker: not found; install Docker Engine (https://docs.docker.com/engine/install/)"
  echo "doctor: $failures problem(s) found"
  exit 1
fi
if server="$(docker version --format '{{.Server.Version}}' 2>/dev/null)" && [ -n "$server" ]; then
  ok "docker: engine $server"
else
  fail "docker: cannot reach the Docker daemon; start it (sudo systemctl start docker) or add your user to the 'docker' group"
fi

# 2. Compose v2 plugin, recent enough
if have="$("${compose[@]}" version --short 2>/dev/null)" && [ -n "$have" ]; then
  have="${have#v}"
  if version_at_least "$have" "$min_compose"; then
    ok "compose: $have"
  else
    fail "compose: $have is too old; this stack needs Docker Compose $min_compose or newer (update the docker-compose-plugin package)"
  fi
else
  fail "compose: 'docker compose' not found; install the Docker Compose v2 plugin (docker-compose-plugin)"
fi

# 3. NVIDIA GPU support (GPU mode only)
if [ "$gpu" -eq 1 ]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    ok "gpu: $(nvidia-smi -L 2>/dev/null | head -n 1)"
  else
    fail "gpu: nvidia-smi finds no GPU; install the NVIDIA driver for your card and reboot"
  fi
  runtimes="$(docker info --format '{{json .Runtimes}}' 2>/dev/null || true)"
  if command -v nvidia-container-runtime-hook >/dev/null || command -v nvidia-ctk >/dev/null \
     || printf '%s' "$runtimes" | grep -q nvidia; then
    ok "gpu: NVIDIA Container Toolkit present"
  else
    fail "gpu: NVIDIA Container Toolkit missing; install nvidia-container-toolkit, then 'sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker'"
  fi
fi

# 4. Free ports (unless the stack itself holds them)
running="$("${compose[@]}" ps --status running --quiet 2>/dev/null || true)"
for entry in AGENT_PORT:agent AGENT_HTTP_PORT:agent OLLAMA_PORT:ollama SPEACHES_PORT:speaches; do
  IFS=: read -r key service <<< "$entry"
  port="$(setting "$key")"  # default from .env.example
  if ! port_in_use "$port"; then
    ok "port $port ($service): free"
  elif [ -n "$running" ]; then
    ok "port $port ($service): in use, the stack is running"
  else
    fail "port $port ($service): already in use by another program; stop it or set $key in .env"
  fi
done

# 5. Disk space where Docker keeps images and volumes
need_gb=12
[ "$gpu" -eq 0 ] || need_gb=25
need_gb="${MIN_FREE_GB:-$need_gb}"
root_dir="$(docker info --format '{{.DockerRootDir}}' 2>/dev/null || true)"
if [ -n "$root_dir" ] && [ -d "$root_dir" ]; then
  free_kb="$(df -Pk "$root_dir" | awk 'NR == 2 {print $4}')"
  free_gb=$((free_kb / 1024 / 1024))
  if [ "$free_gb" -ge "$need_gb" ]; then
    ok "disk: ${free_gb} GB free in $root_dir"
  else
    fail "disk: only ${free_gb} GB free in $root_dir; images and models need about ${need_gb} GB"
  fi
else
  warn "disk: cannot see Docker's data directory '${root_dir:-?}' from here; make sure about ${need_gb} GB are free for images and models"
fi

# 6. Memory
mem_kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null || echo 0)"
mem_gb=$(( (mem_kb + 524288) / 1024 / 1024 ))
if [ "$mem_gb" -ge 8 ]; then
  ok "memory: ${mem_gb} GB"
else
  warn "memory: ${mem_gb} GB; 8 GB or more is recommended (a smaller OLLAMA_MODEL such as llama3.2:1b helps)"
fi

# 7. Settings file
if [ -f .env ]; then
  ok "settings: .env present"
else
  warn "settings: no .env; defaults are used (cp .env.example .env to change them)"
fi

if [ "$failures" -gt 0 ]; then
  echo "doctor: $failures problem(s) found"
  exit 1
fi
echo "doctor: all checks passed"
