#include "otpp/registry/join_cluster.hpp"

#include "otpp/registry/introspect.hpp"

namespace otpp {

result<cluster::service*> join_cluster(node& n, cluster::options options, global_options global) {
  auto joined = cluster::join(n, std::move(options));
  if (!joined) return joined.fail();
  // Right after the join: the replicas fill from the peers' snapshots as their hellos arrive.
  // A registry that already runs keeps its options (invalid_argument is that case).
  (void)start_global(n, std::move(global));
  pg::start(n);
  auto served = serve_remote_spawn(n);
  if (!served) return served.fail();
  served = introspect::serve(n);
  if (!served) return served.fail();
  return joined;
}

}  // namespace otpp
