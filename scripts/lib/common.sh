# shellcheck shell=bash
# Shared helpers for scripts/serve, scripts/test and scripts/backends.
# Sourced, not executed: the caller has already set `set -euo pipefail`.
# Every message goes to stderr; nothing here ever prints a secret value.

ARCHIVER_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV="$ARCHIVER_ROOT/.venv"

log() { printf '%s: %s\n' "${LOG_PREFIX:-archiver}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- Python virtualenv -------------------------------------------------------

# A python3 of at least 3.11 (the project's requires-python).
find_python() {
  local py
  for py in "${ARCHIVER_PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    if [[ -z $py ]] || ! command -v "$py" >/dev/null 2>&1; then continue; fi
    if "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$py"; return 0
    fi
  done
  return 1
}

# True when an install stamp in the venv covers pyproject.toml's current hash
# and every extra in $1 (comma separated). A stamp file holds "sha256 extras".
_stamp_covers() {
  local want_hash=$1 want_extras=$2 stamp hash extras e ok
  for stamp in "$VENV"/.archiver-stamp.*; do
    [[ -f $stamp ]] || continue
    read -r hash extras <"$stamp" || continue
    [[ $hash == "$want_hash" ]] || continue
    ok=1
    for e in ${want_extras//,/ }; do
      [[ ",$extras," == *",$e,"* ]] || { ok=0; break; }
    done
    ((ok)) && return 0
  done
  return 1
}

# ensure_venv EXTRAS [EXECUTABLE...]: create .venv if absent and `pip install -e
# '.[EXTRAS]'` unless a stamp proves the same pyproject.toml was installed with
# those extras and the named executables exist in .venv/bin. The no-change path
# costs one sha256sum.
ensure_venv() {
  local extras=$1; shift
  local hash exe missing=0 py
  if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    py=$(find_python) || die "need python3.11 or newer on PATH (or set ARCHIVER_PYTHON)"
    log "creating $VENV with $py"
    rm -rf "$VENV"
    "$py" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  fi
  hash=$(sha256sum "$ARCHIVER_ROOT/pyproject.toml" | cut -d' ' -f1)
  for exe in archiver "$@"; do
    [[ -x $VENV/bin/$exe ]] || missing=1
  done
  if ((missing == 0)) && _stamp_covers "$hash" "$extras"; then
    return 0
  fi
  log "installing .[$extras] into $VENV (pyproject.toml changed or packages missing)"
  rm -f "$VENV"/.archiver-stamp.*
  (cd "$ARCHIVER_ROOT" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$extras]") >&2 \
    || die "pip install -e '.[$extras]' failed"
  printf '%s %s\n' "$hash" "$extras" >"$VENV/.archiver-stamp.${extras//,/-}"
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
