#!/usr/bin/env bash
# Merge otpp benchmark results with Erlang/OTP peer results (bash + awk only).
#
#   tools/bench/merge.sh [-t TABLE_FILE] [-s SUMMARY_TSV] OTPP.jsonl [ERLANG.jsonl]
#   tools/bench/merge.sh tools/bench/results/<utc>      # re-merge a results dir
#
# Inputs: JSON lines {"name":..,"unit":..,"value":..,...}, each possibly
# starting with a "rep":N field (run.sh adds it); several lines with the same
# name (repetitions) are pooled and their median is taken (lower median for an
# even count).  Output on stdout, one JSON object per line, in otpp order:
# the otpp line of the median sample, plus, when the peer has the same name,
#   "peer":"erlang","peer_value":V,"ratio":R
# ratio > 1 means otpp is better: value/peer_value for units ending in "/s",
# peer_value/value for ns, us, ms, s, bytes, B, KiB, MiB; no ratio otherwise.
# A line that already has a "peer" field is not given another one.  Lines
# without a parsable name/value are passed through unchanged.
# The human table (median, spread = (max-min)/median, ratio) goes to
# TABLE_FILE, or to stderr; SUMMARY_TSV gets the same as tab-separated values.
set -euo pipefail
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
TABLE=/dev/stderr
SUMMARY=/dev/null
while getopts "t:s:h" opt; do
    case "$opt" in
        t) TABLE="$OPTARG" ;;
        s) SUMMARY="$OPTARG" ;;
        *) usage; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ "$#" -eq 1 ] && [ -d "$1" ]; then
    dir="$1"
    set -- "$dir/otpp.raw.jsonl"
    [ -f "$dir/erlang.raw.jsonl" ] && set -- "$@" "$dir/erlang.raw.jsonl"
fi
[ "$#" -ge 1 ] && [ "$#" -le 2 ] || { usage >&2; exit 2; }
OTPP_IN="$1"
PEER_IN="${2:-/dev/null}"
[ -f "$OTPP_IN" ] || OTPP_IN=/dev/null

awk -v table="$TABLE" -v summary="$SUMMARY" '
function field_str(line, key,    s) {       # "key":"text" -> text
    if (!match(line, "\"" key "\"[ \t]*:[ \t]*\"[^\"]*\"")) return ""
    s = substr(line, RSTART, RLENGTH)
    sub("^\"" key "\"[ \t]*:[ \t]*\"", "", s); sub("\"$", "", s)
    return s
}
function field_num(line, key,    s) {       # "key":number -> number text
    if (!match(line, "\"" key "\"[ \t]*:[ \t]*-?[0-9][0-9.eE+-]*")) return ""
    s = substr(line, RSTART, RLENGTH)
    sub("^\"" key "\"[ \t]*:[ \t]*", "", s)
    return s
}
function strip_rep(line) { sub(/^\{[ \t]*"rep"[ \t]*:[ \t]*[0-9]+[ \t]*,[ \t]*/, "{", line); return line }
function better(unit) {                      # 1 higher is better, -1 lower, 0 unknown
    if (unit ~ /\/s$/) return 1
    if (unit ~ /^(ns|us|ms|s|bytes|B|KiB|MiB)$/) return -1
    return 0
}
# sort idx[1..n] of side s, name k by value; return median index (lower median)
function median(s, k, n,    i, j, t, a) {
    for (i = 1; i <= n; i++) ord[i] = i
    for (i = 2; i <= n; i++) {
        t = ord[i]; j = i - 1
        while (j >= 1 && val[s, k, ord[j]] + 0 > val[s, k, t] + 0) { ord[j + 1] = ord[j]; j-- }
        ord[j + 1] = t
    }
    lo[s, k] = val[s, k, ord[1]]; hi[s, k] = val[s, k, ord[n]]
    return ord[int((n + 1) / 2)]
}
function human(v,    a) {
    if (v == "") return "-"
    v = v + 0
    a = (v < 0) ? -v : v
    if (a >= 1e9) return sprintf("%.2fG", v / 1e9)
    if (a >= 1e6) return sprintf("%.2fM", v / 1e6)
    if (a >= 1e4) return sprintf("%.1fk", v / 1e3)
    if (a >= 100) return sprintf("%.0f", v)
    return sprintf("%.3g", v)
}
function spread(s, k, m) {
    if (cnt[s, k] < 2 || m + 0 == 0) return ""
    return sprintf("%.0f%%", (hi[s, k] - lo[s, k]) / m * 100)
}
{
    side = (FILENAME == ARGV[1]) ? "o" : "p"
    line = $0
    if (line !~ /^[ \t]*\{/) next
    name = field_str(line, "name"); v = field_num(line, "value")
    if (name == "" || v == "") {                # not understood: pass through (otpp only)
        if (side == "o") { nother++; other[nother] = strip_rep(line); at[nother] = nnames }
        next
    }
    if (!((side, name) in cnt)) {
        cnt[side, name] = 0
        if (side == "o") { nnames++; names[nnames] = name }
        else { npeer++; peernames[npeer] = name }
    }
    n = ++cnt[side, name]
    val[side, name, n] = v; raw[side, name, n] = strip_rep(line)
    unit[side, name] = field_str(line, "unit")
}
END {
    fmt = "%-44s %12s %6s %12s %6s %8s  %s\n"
    printf fmt, "name", "otpp", "+-", "erlang", "+-", "ratio", "unit" > table
    printf "name\tunit\totpp_median\totpp_min\totpp_max\totpp_n\terlang_median\terlang_min\terlang_max\terlang_n\tratio\n" > summary
    o = 1
    for (i = 1; i <= nnames; i++) {
        while (o <= nother && at[o] < i) { print other[o]; o++ }
        k = names[i]; u = unit["o", k]
        mi = median("o", k, cnt["o", k]); m = val["o", k, mi]; out = raw["o", k, mi]
        pv = ""; r = ""
        if (("p", k) in cnt) {
            pi = median("p", k, cnt["p", k]); pv = val["p", k, pi]
            if (u != unit["p", k]) {
                printf "merge: unit mismatch for %s: otpp %s, erlang %s (not compared)\n", k, u, unit["p", k] > "/dev/stderr"
                pv = ""
            } else if (out !~ /"peer"[ \t]*:/) {
                b = better(u)
                if (b == 1 && pv + 0 != 0) r = sprintf("%.3f", m / pv)
                if (b == -1 && m + 0 != 0) r = sprintf("%.3f", pv / m)
                sub(/[ \t]*\}[ \t]*$/, "", out)
                out = out ",\"peer\":\"erlang\",\"peer_value\":" pv (r != "" ? ",\"ratio\":" r : "") "}"
            }
        }
        print out
        printf fmt, k, human(m), spread("o", k, m), human(pv), (pv != "" ? spread("p", k, pv) : ""), (r != "" ? r : "-"), u > table
        printf "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", k, u, m, lo["o", k], hi["o", k], cnt["o", k], \
            pv, (pv != "" ? lo["p", k] : ""), (pv != "" ? hi["p", k] : ""), (pv != "" ? cnt["p", k] : ""), r > summary
    }
    while (o <= nother) { print other[o]; o++ }
    for (i = 1; i <= npeer; i++) {               # peer figures otpp did not report
        k = peernames[i]
        if (("o", k) in cnt) continue
        pi = median("p", k, cnt["p", k]); pv = val["p", k, pi]
        printf fmt, k, "-", "", human(pv), spread("p", k, pv), "-", unit["p", k] " (erlang only)" > table
        printf "%s\t%s\t\t\t\t\t%s\t%s\t%s\t%d\t\n", k, unit["p", k], pv, lo["p", k], hi["p", k], cnt["p", k] > summary
    }
}' "$OTPP_IN" "$PEER_IN"
