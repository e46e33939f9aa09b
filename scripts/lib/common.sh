# shellcheck shell=bash
# Shared helpers for scripts/serve, scripts/test and scripts/backends.
# Sourced, not executed: the caller has already set `set -euo pipefail`.
# Every message goes to stderr; nothing here ever prints a secret value.

ARCHIVER_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# ARCHIVER_VENV overrides where the virtualenv lives (e.g. a fresh one for a test).
VENV=${ARCHIVER_VENV:-$ARCHIVER_ROOT/.venv}

log() { printf '%s: %s\n' "${LOG_PREFIX:-archiver}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- Python virtualenv -------------------------------------------------------

# A python3 of at least 3.11 (the project's requires-python); 3.11 first, the
# version requirements/*.txt are resolved for.
find_python() {
  local py
  for py in "${ARCHIVER_PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    if [[ -z $py ]] || ! command -v "$py" >/dev/null 2>&1; then continue; fi
    if "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$py"; return 0
    fi
  done
  return 1
}

# The lock file (requirements/*.txt, written by scripts/lock) that holds the
# extras in $1 (comma separated): test.txt for anything beyond `all`.
lock_for_extras() {
  local e
  for e in ${1//,/ }; do
    [[ $e == all ]] || { printf '%s\n' "$ARCHIVER_ROOT/requirements/test.txt"; return 0; }
  done
  printf '%s\n' "$ARCHIVER_ROOT/requirements/serve.txt"
}

# ensure_venv EXTRAS [EXECUTABLE...]: create $VENV if absent, install the lock
# file holding EXTRAS (see lock_for_extras) with `pip install --require-hashes`,
# then the project itself (editable, --no-deps, no build isolation: its build
# backend is in the lock too); requirements/pip.txt's pip before all that.
# Skipped when a stamp proves this lock, pip.txt and pyproject.toml (by their
# sha256) were installed and the named executables exist
# in $VENV/bin. test.txt holds serve.txt's pins (scripts/lock), so a venv may
# carry both stamps. The no-change path costs one sha256sum of three files.
ensure_venv() {
  local extras=$1; shift
  local lock name want exe missing=0 py
  lock=$(lock_for_extras "$extras")
  [[ -f $lock ]] || die "missing $lock (run scripts/lock)"
  name=$(basename "$lock" .txt)
  if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    py=$(find_python) || die "need python3.11 or newer on PATH (or set ARCHIVER_PYTHON)"
    log "creating $VENV with $py"
    rm -rf "$VENV"
    "$py" -m venv "$VENV"
  fi
  want=$(cd "$ARCHIVER_ROOT" && sha256sum "$lock" requirements/pip.txt pyproject.toml | cut -d' ' -f1 | tr '\n' ' ')
  for exe in archiver "$@"; do
    [[ -x $VENV/bin/$exe ]] || missing=1
  done
  if ((missing == 0)) && [[ -f $VENV/.archiver-stamp.$name && $(<"$VENV/.archiver-stamp.$name") == "$want" ]]; then
    return 0
  fi
  log "installing ${lock#"$ARCHIVER_ROOT"/} and the project into $VENV (lock or pyproject.toml changed, or packages missing)"
  rm -f "$VENV/.archiver-stamp.$name"
  # the pinned pip first: faster than the one venv bundles, and the same everywhere
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --require-hashes \
    -r "$ARCHIVER_ROOT/requirements/pip.txt" >&2 || die "pip install -r requirements/pip.txt failed"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r "$lock" >&2 \
    || die "pip install --require-hashes -r ${lock#"$ARCHIVER_ROOT"/} failed"
  (cd "$ARCHIVER_ROOT" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
      --no-deps --no-build-isolation -e .) >&2 \
    || die "pip install --no-deps -e . failed"
  printf '%s\n' "$want" >"$VENV/.archiver-stamp.$name"
}

# --- Debian packages -----------------------------------------------------------

# ensure_apt PROBE:PACKAGE...: install (one apt-get run) the packages whose probe
# path or command is missing. A probe starting with / is a path, else a command.
ensure_apt() {
  local spec probe pkg want=()
  for spec in "$@"; do
    probe=${spec%%:*}; pkg=${spec#*:}
    if [[ $probe == /* ]]; then
      compgen -G "$probe" >/dev/null && continue
    else
      command -v "$probe" >/dev/null 2>&1 && continue
    fi
    want+=("$pkg")
  done
  ((${#want[@]})) || return 0
  [[ $(id -u) == 0 ]] || die "missing packages (${want[*]}); run as root or install them"
  log "apt-get install ${want[*]}"
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}"; } >&2 \
    || die "apt-get install ${want[*]} failed"
}
