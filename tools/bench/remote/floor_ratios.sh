#!/usr/bin/env bash
# Remote figures over the raw TCP floor measured in the same run, for otpp and Erlang.
#
#   tools/bench/remote/floor_ratios.sh [-t TABLE_FILE] SUMMARY_TSV
#   tools/bench/remote/floor_ratios.sh tools/bench/results/<utc>     # uses its summary.tsv
#
# SUMMARY_TSV is merge.sh's summary (medians per side; the floor's lines are on the otpp
# side).  Pairs, by name:
#   remote.call_<X>.<m>        / remote.tcp_floor.rtt_<X>.<m>          X: small 1k 64k c16 c64
#   remote.cast_<X>.throughput / remote.tcp_floor.stream_<X>.throughput   X: small 1k 64k
# Prints one JSON object per pair on stdout, e.g.
#   {"name":"remote.call_small.p50.vs_floor","unit":"x","value":1.42,"peer":"erlang",
#    "peer_value":1.65,"floor":"remote.tcp_floor.rtt_small.p50","floor_value":21.3}
# value = otpp median / floor median, peer_value = Erlang median / floor median (each only
# when that side was measured).  For us (latency) lower is better (the target: call
# p50 <= 1.3x the TCP round trip); for call/s and msg/s (the fraction of the floor's rate
# reached) higher is better.  A human table goes to TABLE_FILE, or to stderr.
set -euo pipefail
TABLE=/dev/stderr
while getopts "t:h" opt; do
    case "$opt" in
        t) TABLE="$OPTARG" ;;
        *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ "$#" -eq 1 ] || { echo "usage: $0 [-t TABLE] SUMMARY_TSV|RESULTS_DIR" >&2; exit 2; }
SUMMARY="$1"; [ -d "$SUMMARY" ] && SUMMARY="$SUMMARY/summary.tsv"
[ -f "$SUMMARY" ] || { echo "floor_ratios: no $SUMMARY" >&2; exit 2; }
case "$TABLE" in /dev/*) ;; *) : >"$TABLE" ;; esac

awk -F'\t' -v table="$TABLE" '
function floor_of(name,    m) {
    if (match(name, /^remote\.call_[a-z0-9]+\./)) {
        m = substr(name, 13, RLENGTH - 13)                 # X in remote.call_X.
        return "remote.tcp_floor.rtt_" m substr(name, RLENGTH)    # + ".<m>"
    }
    if (name ~ /^remote\.cast_[a-z0-9]+\.throughput$/) {
        m = name; sub(/^remote\.cast_/, "", m); sub(/\.throughput$/, "", m)
        return "remote.tcp_floor.stream_" m ".throughput"
    }
    return ""
}
function human(v,    a) {
    a = (v < 0) ? -v : v
    if (a >= 1e9) return sprintf("%.2fG", v / 1e9)
    if (a >= 1e6) return sprintf("%.2fM", v / 1e6)
    if (a >= 1e4) return sprintf("%.1fk", v / 1e3)
    if (a >= 100) return sprintf("%.0f", v)
    return sprintf("%.3g", v)
}
NR == 1 { next }
{ name[NR] = $1; unit[$1] = $2; otpp[$1] = $3; erl[$1] = $7; order[++n] = $1 }
END {
    fmt = "%-36s %-44s %12s %8s %8s\n"; rows = 0
    for (i = 1; i <= n; i++) {
        k = order[i]; f = floor_of(k)
        if (f == "" || !(f in otpp) || otpp[f] == "" || otpp[f] + 0 == 0) continue
        fv = otpp[f] + 0
        o = (otpp[k] != "") ? sprintf("%.3f", otpp[k] / fv) : ""
        e = (erl[k] != "") ? sprintf("%.3f", erl[k] / fv) : ""
        if (o == "" && e == "") continue
        line = "{\"name\":\"" k ".vs_floor\",\"unit\":\"x\""
        if (o != "") line = line ",\"value\":" o
        if (e != "") line = line ",\"peer\":\"erlang\",\"peer_value\":" e
        print line ",\"floor\":\"" f "\",\"floor_value\":" otpp[f] "}"
        if (rows++ == 0) {
            printf "\nremote figures over the TCP floor of this run (us: lower is better; /s: higher)\n" > table
            printf fmt, "name", "floor", "floor", "otpp", "erlang" > table
        }
        printf fmt, k, f, human(fv) " " unit[f], (o != "" ? o : "-"), (e != "" ? e : "-") > table
    }
}' "$SUMMARY"
