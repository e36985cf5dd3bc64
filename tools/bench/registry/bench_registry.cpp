// otpp side of the "registry" benchmark group (tools/bench/README.md, issue 11): remote
// spawn by behaviour name, global names and process groups between node processes on
// 127.0.0.1. Erlang peer: tools/bench/erlang/otpp_registry.erl (same names and units).
//
//   otpp_bench_registry [--quick] [NAME_PREFIX...]     (list: prints the workload ids)
//
// SKELETON: the harness (arguments, selection, output) is here; each workload still has to
// be written (see the TODOs; tools/bench/remote/bench_remote.cpp has the child-node pattern:
// fork + exec of this binary with --serve, PR_SET_PDEATHSIG, stdin EOF = stop). Until then
// every selected workload prints a WARN line (run.sh shows it) and no figure.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

bool quick = false;  // --quick: counts / 10 (smoke runs), as OTPP_BENCH_QUICK=1 for Erlang
std::size_t n(std::size_t count) {
  return quick ? std::max<std::size_t>(1, count / 10) : count;
}

// One result line: {"name":..,"unit":..,"value":..[,extra]}; extra = ,"key":number,...
void print(const std::string& name, const char* unit, double value, const std::string& extra = {}) {
  std::printf("{\"name\":\"%s\",\"unit\":\"%s\",\"value\":%.3f%s}\n", name.c_str(), unit, value,
              extra.c_str());
  std::fflush(stdout);
}

// Nearest rank, as the Erlang side (element ceil(N * p) of the sorted samples, 1-based).
double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto rank = static_cast<std::size_t>(std::ceil(static_cast<double>(v.size()) * p));
  return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}

const char* const workload_ids[] = {"registry.remote_spawn", "registry.global", "registry.pg"};

// A workload id runs if it starts with a prefix, or a prefix starts with the id (the ids are
// plain prefixes of their result names: registry.global_whereis selects registry.global).
bool selected(const std::vector<std::string>& prefixes, const std::string& id) {
  if (prefixes.empty()) return true;
  for (const auto& p : prefixes) {
    if (id.rfind(p, 0) == 0 || p.rfind(id, 0) == 0) return true;
  }
  return false;
}

void not_yet(const char* id) {
  std::printf("WARN %s: otpp side not written yet (tools/bench/registry/bench_registry.cpp)\n", id);
  std::fflush(stdout);
}

// A (this process) + B, C (children), one fresh set per workload.
// TODO remote_spawn: on A, spawn a gen_server on B by behaviour name, returning after its
// init ran: n(500) warm-up, then n(5000) sequential -> registry.remote_spawn_p50_us / _p99_us
// (us); then 16 processes on A, each sequential, n(20000) in all, from go until the last is
// done -> registry.remote_spawns_per_s (spawn/s, extra "spawners","spawns"). Children stay
// up until the end of each round, then are stopped outside the timed part.
void remote_spawn_workload() {
  not_yet("registry.remote_spawn");
}

// TODO global: n(200) warm-up then n(2000) cycles on A of register(new name, a process on A)
// (timed) + unregister (timed separately) -> registry.global_register_p50_us (extra
// "unregister_p50_us","unregister_p99_us","cycles") and registry.global_register_p99_us;
// then 100 names for processes on A, B, C (round robin), n(1000000) lookups on A over them
// in turn -> registry.global_whereis_ns (ns per lookup, loop included; extra "names","lookups").
void global_workload() {
  not_yet("registry.global");
}

// TODO pg: a group of 100 members (34 on A, 33 on B, 33 on C, each joined on its own node);
// once A sees 100, n(1000000) member lookups on A -> registry.pg_members_ns (extra
// "members","lookups"). Then n(200) warm-up + n(2000) cycles on A: join(new group, process
// on A) timed until the call returns -> registry.pg_join_p50_us (extra "p99_us", and
// "visible_remote_p50_us"/"_p99_us": until a watcher on B saw the join and told A), then leave
// and wait until B saw the leave.
void pg_workload() {
  not_yet("registry.pg");
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> prefixes;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      quick = true;
    } else if (a == "list") {
      for (const char* w : workload_ids) std::printf("%s\n", w);
      return 0;
    } else {
      prefixes.push_back(a);
    }
  }
  if (selected(prefixes, "registry.remote_spawn")) remote_spawn_workload();
  if (selected(prefixes, "registry.global")) global_workload();
  if (selected(prefixes, "registry.pg")) pg_workload();
  (void)print;  // used by the workloads once written
  (void)percentile;
  (void)n;
  return 0;
}
