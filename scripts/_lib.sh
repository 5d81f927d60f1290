# Shared helpers for scripts/*.sh (sourced, not executed).
# shellcheck shell=bash

# Absolute repository root, whatever the caller's cwd.
MQLFLOW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$MQLFLOW_ROOT/.cache"
RUN_DIR="$CACHE/run"
LOG_DIR="$CACHE/logs"
BIN_DIR="$CACHE/bin"
SERVICES_ENV="${MQLFLOW_SERVICES_ENV:-$RUN_DIR/services.env}"
VENV_PY="$MQLFLOW_ROOT/.venv/bin/python"

mkdir -p "$RUN_DIR" "$LOG_DIR" "$BIN_DIR" "$(dirname "$SERVICES_ENV")"

log() { printf '[services] %s\n' "$*" >&2; }

die() {
  printf '[services] ERROR: %s\n' "$*" >&2
  exit 1
}

# die_with_log MESSAGE LOGFILE: fail with the tail of a log so the cause is visible.
die_with_log() {
  local msg="$1" logfile="$2"
  printf '[services] ERROR: %s\n' "$msg" >&2
  if [[ -f "$logfile" ]]; then
    printf '[services] last lines of %s:\n' "$logfile" >&2
    tail -n 25 "$logfile" | sed 's/^/    /' >&2
  fi
  exit 1
}

# ensure_venv: the readiness probes run the venv python (pymongo, confluent_kafka).
# Without .venv, create it with scripts/bootstrap.sh rather than probe with a python that
# cannot import them (which would only wait out the timeout).
ensure_venv() {
  if [[ ! -x "$VENV_PY" ]]; then
    log "no $VENV_PY yet: running scripts/bootstrap.sh (the readiness probes need pymongo and confluent_kafka)"
    "$MQLFLOW_ROOT/scripts/bootstrap.sh" >&2 ||
      die "scripts/bootstrap.sh failed; create .venv with it (Python 3.11) and run this again"
  fi
  "$VENV_PY" -c 'import pymongo, confluent_kafka' 2>/dev/null ||
    die "$VENV_PY cannot import pymongo and confluent_kafka: run scripts/bootstrap.sh"
}

python_bin() { echo "$VENV_PY"; }

# pid_alive PIDFILE: 0 when the pid in PIDFILE runs.
pid_alive() {
  local pidfile="$1" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(cat "$pidfile" 2>/dev/null)"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null
}

# stop_pidfile NAME PIDFILE: TERM, wait up to 15 s, then KILL; removes the pid file.
stop_pidfile() {
  local name="$1" pidfile="$2" pid i
  if ! pid_alive "$pidfile"; then
    rm -f "$pidfile"
    log "$name: not running"
    return 0
  fi
  pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name: still running after 15 s, sending KILL to $pid"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  rm -f "$pidfile"
  log "$name: stopped (pid $pid)"
}

# env_set KEY VALUE: write/replace KEY=VALUE in services.env (atomic rename).
env_set() {
  local key="$1" value="$2" tmp
  tmp="$(mktemp "$SERVICES_ENV.XXXXXX")"
  if [[ -f "$SERVICES_ENV" ]]; then
    grep -v "^${key}=" "$SERVICES_ENV" >"$tmp" || true
  fi
  printf '%s=%s\n' "$key" "$value" >>"$tmp"
  mv "$tmp" "$SERVICES_ENV"
}

env_unset() {
  local key="$1" tmp
  [[ -f "$SERVICES_ENV" ]] || return 0
  tmp="$(mktemp "$SERVICES_ENV.XXXXXX")"
  grep -v "^${key}=" "$SERVICES_ENV" >"$tmp" || true
  mv "$tmp" "$SERVICES_ENV"
}

# port_in_use PORT: 0 when something listens on 127.0.0.1:PORT.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# elapsed_since START_EPOCH: seconds since.
elapsed_since() { echo $(($(date +%s) - $1)); }
