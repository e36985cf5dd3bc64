#!/usr/bin/env bash
# otpp benchmarks, side by side with Erlang/OTP when `erl` is installed.
#
#   tools/bench/run.sh [options] [FILTER...]
#
# Builds the benchmarks in Release mode (build-release/), runs every
# build-release/tools/bench/*/otpp_bench_* and, if erl/erlc are on PATH, the
# same workloads on Erlang/OTP (tools/bench/erlang/), REPS times, interleaved
# (odd reps otpp first, even reps Erlang first).  Prints on stdout one JSON
# object per line, the median over the reps:
#   {"name":..,"unit":..,"value":..[,"peer":"erlang","peer_value":..,"ratio":..]}
# ratio > 1 means otpp is better (see merge.sh).  Progress and a human table
# go to stderr; everything raw goes to tools/bench/results/<utc>/.
#
# FILTER words select by prefix: `local` (otpp_bench_local + its Erlang peers),
# `remote` (TCP floor, otpp_bench_remote if built, two Erlang nodes), `registry`
# (otpp_bench_registry if built, three Erlang nodes), `transport`, `failover`
# (otpp_bench_failover: three otpp node processes, failover and singleton
# takeover times, no Erlang peer; `singleton` selects its singleton.* figures),
# or a result-name prefix such as `local.cast` or `remote.call_small.p99` (a
# remote.call_X / remote.cast_X filter also runs the matching TCP floor part).
#
# Options:
#   --reps N          repetitions (default: $REPS or 3)
#   --no-build        do not run cmake; use the binaries already in the build dir
#   --build-dir DIR   build dir (default: $BUILD_DIR or <repo>/build-release)
#   --no-erlang       otpp only, even if erl is installed
#   --install-erlang  apt-get install -y erlang-base first if erl is missing
#   --quick           remote and registry groups: counts / 10; failover: one
#                     rep per figure (smoke runs; not for figures)
#   -h, --help
# Environment: TIMEOUT (s, per Erlang VM, default 300), BIN_TIMEOUT (s, per
# otpp binary, default 900), JOBS (build parallelism, default 2).
# The remote and registry groups start epmd on 127.0.0.1 if none runs, and stop
# it at the end.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
REPS="${REPS:-3}"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-release}"
TIMEOUT="${TIMEOUT:-300}"
BIN_TIMEOUT="${BIN_TIMEOUT:-900}"
JOBS="${JOBS:-2}"
DO_BUILD=1 USE_ERLANG=1 INSTALL_ERLANG=0 QUICK=0
FILTERS=()

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [ "$#" -gt 0 ]; do
    case "$1" in
        --reps) REPS="$2"; shift ;;
        --reps=*) REPS="${1#*=}" ;;
        --no-build) DO_BUILD=0 ;;
        --build-dir) BUILD_DIR="$2"; shift ;;
        --build-dir=*) BUILD_DIR="${1#*=}" ;;
        --no-erlang) USE_ERLANG=0 ;;
        --install-erlang) INSTALL_ERLANG=1 ;;
        --quick) QUICK=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) FILTERS+=("${1#otpp_bench_}") ;;
    esac
    shift
done
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --reps needs a positive integer" >&2; exit 2; }
BUILD_DIR="$(mkdir -p "$BUILD_DIR" && cd "$BUILD_DIR" && pwd)"
say() { echo "[bench] $*" >&2; }

# ------------------------------------------------------------------ erlang?
if [ "$USE_ERLANG" = 1 ] && ! { command -v erl && command -v erlc; } >/dev/null 2>&1; then
    if [ "$INSTALL_ERLANG" = 1 ]; then
        say "installing erlang-base (Debian)"
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq erlang-base >/dev/null
    else
        say "erl not found: otpp results only (--install-erlang to add the Erlang/OTP peer)"
        USE_ERLANG=0
    fi
fi

# ------------------------------------------------------------------ selection
# selects ITEM PREFIX: is a binary / workload whose results all start with
# PREFIX selected by the filter words?  Prints the name-prefix filter to apply
# to its lines ("" = keep all).
selects() {
    local item="$1" w parts=() hit=0
    [ "${#FILTERS[@]}" -eq 0 ] && { echo ""; return 0; }
    for w in "${FILTERS[@]}"; do
        if [[ "$item" == "$w"* ]]; then echo ""; return 0; fi     # whole item
        # part of it (registry.* workload ids are plain prefixes of their names:
        # registry.global prints registry.global_register_p50_us, ...)
        if [[ "$w" == "$item."* || ( "$item" == registry.* && "$w" == "$item"?* ) ]]; then
            parts+=("$w"); hit=1
        fi
    done
    [ "$hit" = 1 ] || return 1
    echo "${parts[*]}"
}

# ------------------------------------------------------------------ results dir
RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$HERE/results/$RUN_ID"
[ -e "$OUT" ] && OUT="$OUT-$$"                  # two runs in the same second
mkdir -p "$OUT"
LOG="$OUT/log.txt"; META="$OUT/meta.tsv"
OTPP_RAW="$OUT/otpp.raw.jsonl"; ERL_RAW="$OUT/erlang.raw.jsonl"
: >"$LOG"; : >"$OTPP_RAW"
printf 'rep\tside\tprogram\trc\twall_s\tself_cpu_s\tforeign_cpu_pct\tloadavg1\n' >"$META"
say "results: $OUT"

# ------------------------------------------------------------------ build
if [ "$DO_BUILD" = 1 ]; then
    say "building (Release) in $BUILD_DIR"
    gen=(); [ -f "$BUILD_DIR/CMakeCache.txt" ] || { command -v ninja >/dev/null 2>&1 && gen=(-G Ninja); }
    if ! { cmake -S "$ROOT" -B "$BUILD_DIR" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
               -DOTPP_BUILD_TESTS=OFF -DOTPP_BUILD_EXAMPLES=OFF -DOTPP_BUILD_BENCH=ON &&
           cmake --build "$BUILD_DIR" -j"$JOBS"; } >"$OUT/build.log" 2>&1; then
        { grep -E "(error|FAILED|Error)" "$OUT/build.log" | head -n 20 || true; } >&2
        say "build failed (full log: $OUT/build.log)"
        exit 1
    fi
fi

# A binary's selection name is its name without otpp_bench_, prefixed with its
# folder when it does not start with it: remote/otpp_bench_tcp_floor is
# `remote.tcp_floor`, local/otpp_bench_local is `local`.
# floor_for_filters: the TCP floor measurements the remote filter words need
# (remote.call_X... -> remote.tcp_floor.rtt_X..., remote.cast_X... ->
# remote.tcp_floor.stream_X...); "" = all of them; returns 1 if none.
floor_for_filters() {
    local w out=() all=0
    [ "${#FILTERS[@]}" -eq 0 ] && { echo ""; return 0; }
    for w in "${FILTERS[@]}"; do
        case "$w" in
            remote.call*) out+=("remote.tcp_floor.rtt${w#remote.call}") ;;
            remote.cast*) out+=("remote.tcp_floor.stream${w#remote.cast}") ;;
            remote.*) ;;
            *) [[ "remote" == "$w"* ]] && all=1 ;;
        esac
    done
    [ "$all" = 1 ] && { echo ""; return 0; }
    [ "${#out[@]}" -gt 0 ] || return 1
    echo "${out[*]}"
}
# failover_for_filters: the filter words for otpp_bench_failover, whose figures are
# failover.* and singleton.* ("" = all of them); returns 1 if none.
failover_for_filters() {
    local w out=() all=0
    [ "${#FILTERS[@]}" -eq 0 ] && { echo ""; return 0; }
    for w in "${FILTERS[@]}"; do
        if [[ "failover" == "$w"* ]]; then all=1
        elif [[ "$w" == failover.* || "$w" == singleton.* ]]; then out+=("$w")
        elif [[ "singleton" == "$w"* ]]; then out+=("singleton")
        fi
    done
    [ "$all" = 1 ] && { echo ""; return 0; }
    [ "${#out[@]}" -gt 0 ] || return 1
    echo "${out[*]}"
}
BINS=() BIN_NARROW=()
for b in "$BUILD_DIR"/tools/bench/*/otpp_bench_*; do
    [ -f "$b" ] && [ -x "$b" ] || continue
    short="$(basename "$b" | sed 's/^otpp_bench_//')"; group="$(basename "$(dirname "$b")")"
    item="$short"; [[ "$short" == "$group"* ]] || item="$group.$short"
    if [ "$item" = failover ]; then
        if n="$(failover_for_filters)"; then BINS+=("$b"); BIN_NARROW+=("$n"); fi
    elif n="$(selects "$item")" || n="$(selects "$short")"; then BINS+=("$b"); BIN_NARROW+=("$n")
    elif [ "$item" = remote.tcp_floor ] && n="$(floor_for_filters)"; then BINS+=("$b"); BIN_NARROW+=("$n")
    fi
done
[ "${#BINS[@]}" -gt 0 ] || say "no otpp benchmark binary selected under $BUILD_DIR/tools/bench/*/"
# registry group: the otpp side may not exist yet (tools/bench/registry/bench_registry.cpp)
if selects registry >/dev/null && [ ! -x "$BUILD_DIR/tools/bench/registry/otpp_bench_registry" ]; then
    say "registry: otpp side skipped: $BUILD_DIR/tools/bench/registry/otpp_bench_registry not built" \
        "(tools/bench/registry/bench_registry.cpp missing or otpp::registry not a target): Erlang figures only"
fi

WLS=() WL_NARROW=()
if [ "$USE_ERLANG" = 1 ]; then
    EBIN="$HERE/erlang/ebin"
    mkdir -p "$EBIN"
    erlc -o "$EBIN" "$HERE"/erlang/*.erl
    ERL=(erl -noshell -pa "$EBIN")
    # remote.* and registry.* workloads: the driver VM is a distributed node on 127.0.0.1 (it
    # starts its peers itself with the same cookie, interface and net_ticktime)
    ERL_DIST=(-setcookie otpp_bench -kernel inet_dist_use_interface '{127,0,0,1}'
              -kernel net_ticktime "${REMOTE_TICKTIME:-4}")
    : >"$ERL_RAW"
    for w in $("${ERL[@]}" -run otpp_peer main list </dev/null); do
        if n="$(selects "$w")"; then WLS+=("$w"); WL_NARROW+=("$n"); fi
    done
fi

if [ "${#BINS[@]}" -eq 0 ] && [ "${#WLS[@]}" -eq 0 ]; then
    say "nothing to run (filter: ${FILTERS[*]:-none})"; rm -rf "$OUT"; exit 2
fi

# ------------------------------------------------------------------ epmd (remote, registry)
# Distributed Erlang needs epmd: started here on 127.0.0.1 when none runs, and
# stopped at exit (epmd -kill refuses while a node is still registered: then a
# stray node is reported).
EPMD_OURS=0
stop_epmd() {
    [ "$EPMD_OURS" = 1 ] || return 0
    local names
    names="$(epmd -names 2>/dev/null | grep '^name ' || true)"
    [ -z "$names" ] || say "WARN: Erlang nodes still registered with epmd: $(echo "$names" | tr '\n' ' ')"
    epmd -kill >/dev/null 2>&1 || say "WARN: epmd -kill failed (epmd left running)"
    EPMD_OURS=0
}
if [ "${#WLS[@]}" -gt 0 ] && printf '%s\n' "${WLS[@]}" | grep -qE '^(remote|registry)\.'; then
    export ERL_EPMD_ADDRESS=127.0.0.1           # epmd and the nodes on loopback only
    if ! epmd -names >/dev/null 2>&1; then
        epmd -daemon -address 127.0.0.1
        EPMD_OURS=1
        trap stop_epmd EXIT
        for _ in $(seq 1 50); do epmd -names >/dev/null 2>&1 && break; sleep 0.1; done
        epmd -names >/dev/null 2>&1 || { say "epmd did not start"; exit 1; }
    fi
fi
if [ "$QUICK" = 1 ]; then export OTPP_BENCH_QUICK=1; fi

# ------------------------------------------------------------------ versions
{
    echo "date_utc: $(date -u +%FT%TZ)"
    echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo n/a)" \
         "($(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) files changed)"
    echo "reps: $REPS  filter: ${FILTERS[*]:-(all)}"
    echo "build_dir: $BUILD_DIR"
    [ -f "$BUILD_DIR/CMakeCache.txt" ] &&
        echo "cmake: $(grep -E '^CMAKE_(BUILD_TYPE|CXX_COMPILER):' "$BUILD_DIR/CMakeCache.txt" | cut -d= -f2 | tr '\n' ' ')"
    cxx="$(grep -E '^CMAKE_CXX_COMPILER:' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null | cut -d= -f2 || true)"
    [ -n "$cxx" ] && echo "cxx: $("$cxx" --version 2>/dev/null | head -1)"
    if [ "$USE_ERLANG" = 1 ]; then
        echo "erlang: $("${ERL[@]}" -eval 'io:format("OTP ~s, ERTS ~s, ~b schedulers, ~s", [erlang:system_info(otp_release), erlang:system_info(version), erlang:system_info(schedulers_online), string:trim(erlang:system_info(system_version))]), halt().' </dev/null)"
        echo "otp_version: $(cat "$(dirname "$(dirname "$(readlink -f "$(command -v erl)")")")"/releases/*/OTP_VERSION 2>/dev/null || echo n/a)"
        echo "erlang_base_deb: $(dpkg-query -W -f='${Version}' erlang-base 2>/dev/null || echo n/a)"
    else
        echo "erlang: not run"
    fi
    echo "kernel: $(uname -srm)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') x $(nproc)"
    echo "mem: $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "loadavg: $(cut -d' ' -f1-3 /proc/loadavg)"
    if command -v lscpu >/dev/null 2>&1; then
        echo "lscpu: $(lscpu | awk -F': *' '/^(Model name|Vendor ID|Hypervisor vendor|CPU\(s\)|Thread\(s\) per core|L3 cache)/ { printf "%s=%s; ", $1, $2 }')"
    fi
    if [ "$QUICK" = 1 ]; then echo "QUICK: remote and registry counts / 10, failover one rep (smoke run, not figures)"; fi
} >"$OUT/versions.txt"
sed 's/^/[bench]   /' "$OUT/versions.txt" >&2

# ------------------------------------------------------------------ running
cpu_busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
CLK_TCK="$(getconf CLK_TCK)"; NCPU="$(nproc)"
FAILED=0

# run_one REP SIDE LABEL NARROW RAWFILE CMD... : JSON lines (optionally only
# names starting with one of the NARROW words) -> RAWFILE tagged with "rep";
# everything else -> log.  Also records wall/CPU/foreign CPU (noise) in meta.
run_one() {
    local rep="$1" side="$2" label="$3" narrow="$4" raw="$5"; shift 5
    local tmp rc=0 t0 t1 b0 b1 load timer=()
    tmp="$(mktemp)"
    [ -x /usr/bin/time ] && timer=(/usr/bin/time -f 'CPUTIME %U %S' -o "$tmp.cpu")
    load="$(cut -d' ' -f1 /proc/loadavg)"
    b0="$(cpu_busy)"; t0="$(date +%s.%N)"
    "${timer[@]}" timeout -k 10 "$([ "$side" = otpp ] && echo "$BIN_TIMEOUT" || echo "$TIMEOUT")" \
        "$@" </dev/null >"$tmp" 2>"$tmp.err" || rc=$?
    t1="$(date +%s.%N)"; b1="$(cpu_busy)"
    { echo "### rep=$rep $side $label rc=$rc :: $*"; cat "$tmp" "$tmp.err"; } >>"$LOG"
    awk -v rep="$rep" -v narrow="$narrow" '
        /^[ \t]*\{/ {
            if (narrow != "") {
                n = split(narrow, w, " "); keep = 0
                for (i = 1; i <= n; i++)
                    if (index($0, "\"name\":\"" w[i]) || index($0, "\"name\": \"" w[i])) keep = 1
                if (!keep) next
            }
            sub(/^[ \t]*\{/, "{\"rep\":" rep ","); print
        }' "$tmp" >>"$raw"
    grep -E '^(ERROR|WARN)' "$tmp" "$tmp.err" 2>/dev/null | sed "s/^/[bench] $label: /" >&2 || true
    if [ "$rc" != 0 ]; then
        FAILED=1
        say "WARN: $side $label rep $rep exited with $rc$([ "$rc" = 124 ] && echo ' (timeout)') -- see $LOG"
    fi
    awk -v rep="$rep" -v sd="$side" -v lb="$label" -v rc="$rc" -v t0="$t0" -v t1="$t1" \
        -v b0="$b0" -v b1="$b1" -v hz="$CLK_TCK" -v n="$NCPU" -v ld="$load" '
        BEGIN { wall = t1 - t0; self = "" }
        /^CPUTIME/ { self = $2 + $3 }
        END { f = ""
              if (self != "" && wall > 0) { f = ((b1 - b0) / hz - self) / (wall * n) * 100; if (f < 0) f = 0; f = sprintf("%.1f", f) }
              printf "%s\t%s\t%s\t%s\t%.2f\t%s\t%s\t%s\n", rep, sd, lb, rc, wall, self, f, ld }' \
        "$( [ -f "$tmp.cpu" ] && echo "$tmp.cpu" || echo /dev/null )" >>"$META"
    rm -f "$tmp" "$tmp.err" "$tmp.cpu"
}

run_otpp() {
    local i args words
    for i in "${!BINS[@]}"; do
        say "rep $1/$REPS otpp   $(basename "${BINS[$i]}")"
        # remote/, registry/ and failover/ binaries take [--quick] [NAME_PREFIX...] (see README)
        args=()
        if [[ "$(basename "$(dirname "${BINS[$i]}")")" =~ ^(remote|registry|failover)$ ]]; then
            if [ "$QUICK" = 1 ]; then args+=(--quick); fi
            if [ -n "${BIN_NARROW[$i]}" ]; then read -r -a words <<<"${BIN_NARROW[$i]}"; args+=("${words[@]}"); fi
        fi
        run_one "$1" otpp "$(basename "${BINS[$i]}")" "${BIN_NARROW[$i]}" "$OTPP_RAW" "${BINS[$i]}" "${args[@]}"
    done
}
run_erlang() {
    local i dist
    for i in "${!WLS[@]}"; do
        say "rep $1/$REPS erlang ${WLS[$i]}"
        dist=()
        if [[ "${WLS[$i]}" == remote.* || "${WLS[$i]}" == registry.* ]]; then dist=(-name "otpp_ra_$$_$1_$i@127.0.0.1" "${ERL_DIST[@]}"); fi
        run_one "$1" erlang "${WLS[$i]}" "${WL_NARROW[$i]}" "$ERL_RAW" \
            "${ERL[@]}" "${dist[@]}" -run otpp_peer main "${WLS[$i]}"
    done
}

for rep in $(seq 1 "$REPS"); do
    if [ $((rep % 2)) = 1 ]; then run_otpp "$rep"; run_erlang "$rep"
    else run_erlang "$rep"; run_otpp "$rep"; fi
done

stop_epmd

# ------------------------------------------------------------------ merge
merge_args=("$OTPP_RAW"); [ "$USE_ERLANG" = 1 ] && merge_args+=("$ERL_RAW")
bash "$HERE/merge.sh" -t "$OUT/table.txt" -s "$OUT/summary.tsv" "${merge_args[@]}" | tee "$OUT/results.jsonl"
# remote figures over the TCP floor measured in the same run (both sides)
if grep -q '^remote\.tcp_floor\.' "$OUT/summary.tsv" 2>/dev/null; then
    bash "$HERE/remote/floor_ratios.sh" -t "$OUT/floor_table.txt" "$OUT/summary.tsv" | tee -a "$OUT/results.jsonl"
    if [ -s "$OUT/floor_table.txt" ]; then cat "$OUT/floor_table.txt" >>"$OUT/table.txt"; fi
fi
{
    echo
    echo "median of $REPS rep(s); +- = (max-min)/median; ratio > 1: otpp better"
    cat "$OUT/table.txt"
    awk -F'\t' 'NR > 1 && $7 != "" { s += $7 * $5; w += $5; if ($7 > m) m = $7 }
        END { if (w > 0) printf "noise: other processes used %.1f%% of the CPUs meanwhile (time-weighted; max %.1f%% in one program)\n", s / w, m }' "$META"
    echo "results: $OUT"
} >&2
exit "$FAILED"
