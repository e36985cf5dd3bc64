// One call that makes a node a full member: joins the cluster and serves, over it, what this
// layer adds (global names, process groups, remote spawn, introspection). Every node of a cluster
// should join this way: a node that only called cluster::join does not answer global name claims,
// keeps no replica and drops spawn requests.
//
//   otpp::node node({.name = "api@127.0.0.1:4370"});
//   node.start();
//   otpp::register_behaviour<worker, worker_args>(node, "worker");  // before or after
//   auto c = otpp::join_cluster(node, {.seeds = {"127.0.0.1:4371"}});
#pragma once

#include "otpp/cluster/cluster.hpp"
#include "otpp/registry/behaviours.hpp"
#include "otpp/registry/global.hpp"
#include "otpp/registry/groups.hpp"

namespace otpp {

// cluster::join, then the global registry (with `global`: its resolver and conflict handler,
// the same on every node), process groups, the remote spawn service and introspection
// (introspect::serve with its defaults). Errors are join's; a
// second call answers the same service (the global options of the first call stay).
result<cluster::service*> join_cluster(node& n, cluster::options options,
                                       global_options global = {});

}  // namespace otpp
