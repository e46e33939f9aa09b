# shellcheck shell=bash
# `scripts/bench search`: sourced by scripts/bench (common.sh is loaded, cwd is the repo).
# Starts a private OpenSearch node on ports the test suite never uses, runs
# scripts/bench_lib/search_bench.py against it, and stops the node on every exit path.

SB_HTTP_PORT=29200 SB_TRANSPORT_PORT=29300
SB_OS_VERSION=2.19.6
SB_JAVA_HOME=${ARCHIVER_TEST_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
SB_ZIP=${ARCHIVER_TEST_CACHE:-/var/cache/archiver-test}/opensearch-$SB_OS_VERSION.zip
SB_WORK="" SB_PIDFILE=""

bench_search() {
  local n=() quick=() write="" a
  while (($#)); do
    a=$1; shift
    case $a in
      --quick) quick=(--quick) ;;
      --n) (($#)) || die "--n needs a number"; n=(--n "$1"); shift ;;
      --n=*) n=(--n "${a#--n=}") ;;
      --write) write=1 ;;
      --no-write) write=0 ;;
      -h|--help) sed -n '12,18p' "$ARCHIVER_ROOT/scripts/bench" | sed 's/^# \{0,1\}//'; return 0 ;;
      *) die "unknown option $a (see scripts/bench --help)" ;;
    esac
  done
  ensure_venv all,test
  _sb_prereqs
  SB_WORK=$(mktemp -d "${TMPDIR:-/tmp}/archiver-bench-search.XXXXXX")
  trap _sb_cleanup EXIT
  trap 'exit 130' INT TERM
  log "work dir $SB_WORK"
  _sb_start_opensearch
  local doc=()
  [[ ${write:-$((${#quick[@]} == 0))} == 1 ]] && doc=(--doc docs/benchmarks.md)
  BENCH_OS_PID=$(cat "$SB_PIDFILE") BENCH_OS_HEAP=${BENCH_OS_HEAP:-1g} \
    "$VENV/bin/python" scripts/bench_lib/search_bench.py --work "$SB_WORK" \
    --opensearch "http://127.0.0.1:$SB_HTTP_PORT" "${n[@]}" "${quick[@]}" "${doc[@]}"
}

_sb_port_busy() { [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }

# Java, unzip, the opensearch user and the integ-test zip (fetched like scripts/backends does).
_sb_prereqs() {
  ensure_apt curl:curl unzip:unzip ss:iproute2 "$SB_JAVA_HOME/bin/java:openjdk-17-jre-headless"
  id -u opensearch >/dev/null 2>&1 ||
    useradd --system --no-create-home --shell /usr/sbin/nologin opensearch ||
    die "cannot create system user opensearch (OpenSearch refuses to run as root)"
  [[ -s $SB_ZIP ]] && return 0
  ensure_apt mvn:maven
  log "fetching OpenSearch $SB_OS_VERSION integ-test zip into $(dirname "$SB_ZIP")"
  mkdir -p "$(dirname "$SB_ZIP")"
  local tmp; tmp=$(mktemp -d "$(dirname "$SB_ZIP")/.fetch.XXXXXX")
  if ! mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
      -Dartifact="org.opensearch.distribution.integ-test-zip:opensearch:$SB_OS_VERSION:zip" \
      -DoutputDirectory="$tmp" >&2 || ! unzip -tqq "$tmp/opensearch-$SB_OS_VERSION.zip" >/dev/null; then
    rm -rf "$tmp"; die "could not fetch the OpenSearch $SB_OS_VERSION zip with mvn"
  fi
  mv "$tmp/opensearch-$SB_OS_VERSION.zip" "$SB_ZIP" && rmdir "$tmp"
}

_sb_start_opensearch() {
  local dir=$SB_WORK/opensearch p
  for p in $SB_HTTP_PORT $SB_TRANSPORT_PORT; do
    _sb_port_busy "$p" && die "port $p is in use; the search benchmark needs 29200 and 29300 free"
  done
  mkdir -p "$dir/data" "$dir/logs" "$dir/tmp"
  unzip -q "$SB_ZIP" -d "$dir"
  chmod 0711 "$SB_WORK"   # mktemp made it 0700: the opensearch user must reach its dir
  chown -R opensearch:opensearch "$dir"
  SB_PIDFILE=$dir/opensearch.pid
  runuser -u opensearch -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$dir" LANG=C.UTF-8 \
    JAVA_HOME="$SB_JAVA_HOME" OPENSEARCH_JAVA_OPTS="-Xms${BENCH_OS_HEAP:-1g} -Xmx${BENCH_OS_HEAP:-1g}" \
    OPENSEARCH_TMPDIR="$dir/tmp" \
    setsid -w "$dir/opensearch-$SB_OS_VERSION/bin/opensearch" -d -p "$SB_PIDFILE" \
      -Ediscovery.type=single-node -Enetwork.host=127.0.0.1 \
      -Ehttp.port=$SB_HTTP_PORT -Etransport.port=$SB_TRANSPORT_PORT \
      -Epath.data="$dir/data" -Epath.logs="$dir/logs" \
      -Ecluster.routing.allocation.disk.threshold_enabled=false \
      -Ecluster.name=archiver-bench -Enode.name=archiver-bench-0 \
      >>"$dir/stdout.log" 2>&1 </dev/null || { tail -40 "$dir/stdout.log" >&2; die "opensearch did not start"; }
  local deadline=$((SECONDS + 180))
  until curl -fsS --max-time 5 "http://127.0.0.1:$SB_HTTP_PORT/_cluster/health?wait_for_status=yellow&timeout=1s" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { tail -40 "$dir/logs/archiver-bench.log" >&2; die "opensearch not ready in 180 s"; }
    sleep 1
  done
  log "opensearch ready on :$SB_HTTP_PORT (pid $(cat "$SB_PIDFILE"))"
}

_sb_cleanup() {
  local pid
  if [[ -n $SB_PIDFILE && -s $SB_PIDFILE ]]; then
    pid=$(tr -cd '0-9' <"$SB_PIDFILE")
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
  fi
  [[ -n $SB_WORK ]] && rm -rf "$SB_WORK"
}
