%% Erlang/OTP peer of otpp's `otpp_bench_registry` (issue 11: remote spawn by
%% behaviour name, global names, process groups): three BEAM nodes on
%% 127.0.0.1 (A, the driver run.sh starts, plus B and C started here), the
%% same result names and units, one JSON object per line on stdout.  Reached
%% through otpp_peer (`list`, `main`), like otpp_remote, and started the same way:
%%
%%   erl -name otpp_ra@127.0.0.1 -setcookie otpp_bench \
%%       -kernel inet_dist_use_interface '{127,0,0,1}' -kernel net_ticktime 4 \
%%       -noshell -pa ebin -run otpp_peer main registry.global
%%
%% Peers are started and stopped by otpp_remote:with_peers/2 (same safety nets:
%% a peer halts when A goes away).  OTPP_BENCH_QUICK=1 divides the counts by 10.
%%
%% Workloads (one fresh driver VM each) and the names they print:
%%  registry.remote_spawn  remote_spawn_p50_us, _p99_us, remote_spawns_per_s, and
%%                         Erlang-only variants (see spawn_* below)
%%  registry.global        global_register_p50_us, _p99_us, global_whereis_ns
%%  registry.pg            pg_members_ns, pg_join_p50_us
-module(otpp_registry).
-export([workloads/0, workload/1]).
-export([child/2, spawn_members/2, pg_watcher/1]).   % run on the peers

-import(otpp_remote, [emit/3, emit/4, ns/0, rate/3, nearest_rank/2, n/1,
                      with_peers/2, wait_until/2]).

-define(WAIT, 120000).          % ms: upper bound for any single wait

-define(SPAWN_WARMUP, 500).
-define(SPAWNS_SEQ, 5000).      % sequential remote spawns (latency)
-define(SPAWNS_VARIANT, 2000).  % each Erlang-only variant
-define(SPAWNS_CONC, 20000).    % in all, for the rate
-define(SPAWNERS, 16).          % concurrent spawning processes on A (rate)
-define(REG_WARMUP, 200).
-define(REGS, 2000).            % global register + unregister cycles
-define(WHEREIS_NAMES, 100).
-define(LOOKUPS, 1000000).      % whereis_name / get_members calls
-define(PG_MEMBERS, 100).       % members of the looked-up group, over A, B, C
-define(PG_JOIN_WARMUP, 200).
-define(PG_JOINS, 2000).        % pg join + leave cycles

workloads() -> ["registry.remote_spawn", "registry.global", "registry.pg"].

workload(Id) ->
    node() =:= nonode@nohost andalso
        erlang:error({not_distributed, "start this VM with -name x@127.0.0.1 -setcookie C"}),
    run(Id).

%% ================================================================== remote spawn
%% otpp's remote spawn returns after the child's init ran on the remote node.
%% The Erlang equivalent measured as the main figure ("spawn_init"): one
%% erlang:spawn_request(B, otpp_registry, child, [Parent, Ref]) (a module name
%% resolved on B; {reply, error_only}, so no spawn_reply on success), the child
%% runs otpp_peer_nop:init/1, acks to the caller, then becomes an idle
%% gen_server (gen_server:enter_loop); timed until the caller has the ack:
%% one message to B, one back.  Children stay up (idle) until the end of each
%% round, then are killed (outside the timed region).
%%
%% Erlang-only variants, printed for reference:
%%  remote_spawn_noinit_*      erlang:spawn(B, M, F, A): returns when B has
%%                             created the process (spawn_reply), before its init
%%  remote_spawn_gen_server_rpc_*  rpc:call(B, gen_server, start, [..]): the
%%                             idiomatic "start a behaviour there and wait for
%%                             init" (erpc spawns a process on B that starts the
%%                             gen_server: two spawns on B)
run("registry.remote_spawn") ->
    with_mesh(fun([B, _C]) ->
        round(B, fun() -> spawn_seq(B, fun spawn_init/1, n(?SPAWN_WARMUP)) end),
        Lat = round(B, fun() -> spawn_seq(B, fun spawn_init/1, n(?SPAWNS_SEQ)) end),
        emit_lat("registry.remote_spawn", Lat),
        {T0, T1, Count} = round(B, fun() -> spawn_conc(B, ?SPAWNERS, n(?SPAWNS_CONC)) end),
        emit("registry.remote_spawns_per_s", "spawn/s", rate(Count, T0, T1),
             [{"spawners", ?SPAWNERS}, {"spawns", Count}]),
        NoInit = round(B, fun() -> spawn_seq(B, fun spawn_noinit/1, n(?SPAWNS_VARIANT)) end),
        emit_lat("registry.remote_spawn_noinit", NoInit),
        Rpc = round(B, fun() -> spawn_seq(B, fun spawn_rpc/1, n(?SPAWNS_VARIANT)) end),
        emit_lat("registry.remote_spawn_gen_server_rpc", Rpc)
    end);

%% ================================================================== global
%% A, B, C in full mesh, global synced.  Register: on A, N cycles of
%% global:register_name(Name, Pid) (timed) then global:unregister_name(Name)
%% (timed separately, extra field), each Name new, Pid an idle process on A.
%% Whereis: 100 names registered for idle processes on A, B and C (round
%% robin); on A, whereis_name over them in turn; ns per lookup (loop included).
run("registry.global") ->
    with_mesh(fun([B, C]) ->
        Owner = spawn_link(fun idle/0),
        _ = reg_cycles(Owner, n(?REG_WARMUP), [], []),
        {Reg, Unreg} = reg_cycles(Owner, n(?REGS), [], []),
        SortedU = list_to_tuple(lists:sort(Unreg)),
        emit_lat("registry.global_register", Reg,
                 [{"unregister_p50_us", nearest_rank(SortedU, 50) / 1000},
                  {"unregister_p99_us", nearest_rank(SortedU, 99) / 1000},
                  {"cycles", length(Reg)}]),
        Nodes = list_to_tuple([node(), B, C]),
        Names = [begin
                     Name = {otpp_bench_w, I},
                     Pid = spawn(element(I rem 3 + 1, Nodes), fun idle/0),
                     yes = global:register_name(Name, Pid),
                     Name
                 end || I <- lists:seq(1, ?WHEREIS_NAMES)],
        NamesT = list_to_tuple(Names),
        [true = is_pid(global:whereis_name(Nm)) || Nm <- Names],
        N = n(?LOOKUPS),
        _ = whereis_loop(NamesT, min(N, 100000)),          % warm-up
        T0 = ns(),
        whereis_loop(NamesT, N),
        T1 = ns(),
        emit("registry.global_whereis_ns", "ns", (T1 - T0) / N,
             [{"names", ?WHEREIS_NAMES}, {"lookups", N}])
    end);

%% ================================================================== pg
%% The default scope (pg) started on A, B, C.  Members: a group of 100 idle
%% processes, 34 on A, 33 on B, 33 on C, each joined on its own node; once A
%% sees all 100, N pg:get_members(Group) on A; ns per lookup.
%% Join: on A, N cycles of pg:join(Group, Pid) (timed: until the call returns
%% on A; pg tells the other nodes asynchronously) then pg:leave, each Group new.
%% Extra field visible_remote_p50_us: from the join until a watcher on B
%% (pg:monitor_scope) has seen it and its message reached A (so one more
%% one-way hop than the propagation itself); each cycle waits for that and for
%% the leave to be seen on B before the next.
run("registry.pg") ->
    with_mesh(fun([B, C]) ->
        [ok = start_pg(Nd) || Nd <- [node(), B, C]],
        ok = wait_pg_synced([B, C], 10000),
        Group = otpp_bench_members,
        PerNode = [?PG_MEMBERS - 2 * (?PG_MEMBERS div 3), ?PG_MEMBERS div 3, ?PG_MEMBERS div 3],
        [ok = rpc:call(Nd, ?MODULE, spawn_members, [Group, K], ?WAIT)
         || {Nd, K} <- lists:zip([node(), B, C], PerNode)],
        ok = wait_until(fun() -> length(pg:get_members(Group)) =:= ?PG_MEMBERS end, 10000),
        N = n(?LOOKUPS),
        _ = members_loop(Group, min(N, 100000)),           % warm-up
        T0 = ns(),
        members_loop(Group, N),
        T1 = ns(),
        emit("registry.pg_members_ns", "ns", (T1 - T0) / N,
             [{"members", ?PG_MEMBERS}, {"lookups", N}]),
        Watcher = spawn(B, ?MODULE, pg_watcher, [self()]),
        receive {pg_watching, Watcher} -> ok after ?WAIT -> erlang:error({timeout, pg_watcher}) end,
        Joiner = spawn_link(fun idle/0),
        _ = join_cycles(Joiner, n(?PG_JOIN_WARMUP), [], []),
        {Join, Visible} = join_cycles(Joiner, n(?PG_JOINS), [], []),
        SortedV = list_to_tuple(lists:sort(Visible)),
        SortedJ = list_to_tuple(lists:sort(Join)),
        emit("registry.pg_join_p50_us", "us", nearest_rank(SortedJ, 50) / 1000,
             [{"p99_us", nearest_rank(SortedJ, 99) / 1000},
              {"visible_remote_p50_us", nearest_rank(SortedV, 50) / 1000},
              {"visible_remote_p99_us", nearest_rank(SortedV, 99) / 1000},
              {"cycles", length(Join)}]),
        exit(Watcher, kill)
    end).

%% ------------------------------------------------------------------ helpers
emit_lat(Id, Lat) -> emit_lat(Id, Lat, []).
emit_lat(Id, Lat, Extra) ->
    Sorted = list_to_tuple(lists:sort(Lat)),
    emit(Id ++ "_p50_us", "us", nearest_rank(Sorted, 50) / 1000, Extra),
    emit(Id ++ "_p99_us", "us", nearest_rank(Sorted, 99) / 1000).

%% A, B, C in full mesh, global synced.
with_mesh(Fun) ->
    with_peers(2, fun([B, C] = Peers) ->
        pong = rpc:call(B, net_adm, ping, [C], ?WAIT),
        ok = global:sync(),
        ok = wait_until(fun() -> length(rpc:call(B, erlang, nodes, [])) >= 2 andalso
                                 length(rpc:call(C, erlang, nodes, [])) >= 2 end, 10000),
        ok = rpc:call(B, global, sync, [], ?WAIT),
        ok = rpc:call(C, global, sync, [], ?WAIT),
        Fun(Peers)
    end).

idle() ->
    receive stop -> ok
    after 600000 -> ok
    end.

elapsed(T0, T1) -> erlang:convert_time_unit(T1 - T0, native, nanosecond).

%% ------------------------------------------------------------------ spawn
%% round(B, F): F() returns {Result, Children} (children on B, killed after);
%% returns Result once B's process count is back to where it was.
round(B, F) ->
    Base = rpc:call(B, erlang, system_info, [process_count], ?WAIT),
    {Result, Kids} = F(),
    [exit(P, kill) || P <- Kids],
    ok = wait_until(fun() ->
                        rpc:call(B, erlang, system_info, [process_count], ?WAIT) =< Base + 2
                    end, 60000),
    Result.

%% Sequential spawns with Spawn(B) -> Pid; {latencies (ns), pids}.
spawn_seq(B, Spawn, N) -> spawn_seq(B, Spawn, N, [], []).
spawn_seq(_B, _Spawn, 0, Lat, Kids) -> {Lat, Kids};
spawn_seq(B, Spawn, N, Lat, Kids) ->
    {Ns, Pid} = Spawn(B),
    spawn_seq(B, Spawn, N - 1, [Ns | Lat], [Pid | Kids]).

%% spawn_request, the child acks after its init: matches otpp's semantics.
spawn_init(B) ->
    Ref = make_ref(),
    T0 = erlang:monotonic_time(),
    ReqId = erlang:spawn_request(B, ?MODULE, child, [self(), Ref], [{reply, error_only}]),
    receive
        {Ref, Pid} ->
            T1 = erlang:monotonic_time(),
            {elapsed(T0, T1), Pid};
        {spawn_reply, ReqId, error, Why} -> erlang:error({remote_spawn_failed, Why})
    after ?WAIT -> erlang:error({timeout, remote_spawn})
    end.

%% spawn/4: returns when the process exists on B (its init may not have run yet).
spawn_noinit(B) ->
    Ref = make_ref(),
    T0 = erlang:monotonic_time(),
    Pid = spawn(B, ?MODULE, child, [self(), Ref]),
    T1 = erlang:monotonic_time(),
    receive {Ref, Pid} -> ok after ?WAIT -> erlang:error({timeout, child_ack}) end,
    {elapsed(T0, T1), Pid}.

%% rpc:call(B, gen_server, start, ...): returns {ok, Pid} after init/1 ran on B.
spawn_rpc(B) ->
    T0 = erlang:monotonic_time(),
    {ok, Pid} = rpc:call(B, gen_server, start, [otpp_peer_nop, [], []], ?WAIT),
    T1 = erlang:monotonic_time(),
    {elapsed(T0, T1), Pid}.

%% Spawners processes on A, each sequential spawn_init, Total in all; from go
%% until the last spawner is done.  {{T0, T1, Count}, pids}.
spawn_conc(B, Spawners, Total) ->
    Per = max(1, Total div Spawners),
    Self = self(),
    Ps = [spawn_link(fun() ->
              receive go -> ok after ?WAIT -> exit(no_go) end,
              {_, Kids} = spawn_seq(B, fun spawn_init/1, Per),
              Self ! {spawned, self(), Kids}
          end) || _ <- lists:seq(1, Spawners)],
    T0 = ns(),
    [P ! go || P <- Ps],
    Kids = [receive {spawned, P, K} -> K after ?WAIT -> erlang:error({timeout, spawner}) end
            || P <- Ps],
    T1 = ns(),
    {{T0, T1, Per * Spawners}, lists:append(Kids)}.

%% On B: the spawned child.  init, ack, then an idle gen_server.
child(Parent, Ref) ->
    {ok, State} = otpp_peer_nop:init([]),
    Parent ! {Ref, self()},
    put('$ancestors', [Parent]),
    put('$initial_call', {otpp_peer_nop, init, 1}),
    gen_server:enter_loop(otpp_peer_nop, [], State).

%% ------------------------------------------------------------------ global
reg_cycles(_Owner, 0, Reg, Unreg) -> {Reg, Unreg};
reg_cycles(Owner, N, Reg, Unreg) ->
    Name = {otpp_bench_g, erlang:unique_integer([positive])},
    T0 = erlang:monotonic_time(),
    yes = global:register_name(Name, Owner),
    T1 = erlang:monotonic_time(),
    _ = global:unregister_name(Name),
    T2 = erlang:monotonic_time(),
    reg_cycles(Owner, N - 1, [elapsed(T0, T1) | Reg], [elapsed(T1, T2) | Unreg]).

whereis_loop(_T, 0) -> ok;
whereis_loop(T, N) ->
    case global:whereis_name(element(N rem tuple_size(T) + 1, T)) of
        P when is_pid(P) -> whereis_loop(T, N - 1);
        Other -> erlang:error({whereis, Other})
    end.

%% ------------------------------------------------------------------ pg
start_pg(Node) ->
    case rpc:call(Node, erlang, whereis, [pg], ?WAIT) of
        undefined ->
            case rpc:call(Node, pg, start, [pg], ?WAIT) of
                {ok, _} -> ok;
                {error, {already_started, _}} -> ok;
                Err -> Err
            end;
        P when is_pid(P) -> ok
    end.

%% Every scope server knows the others (pg's own discover handshake).
wait_pg_synced(Peers, Ms) ->
    Probe = {otpp_bench_probe, node()},
    ok = pg:join(Probe, self()),
    R = wait_until(fun() ->
                       lists:all(fun(Nd) ->
                                     rpc:call(Nd, pg, get_members, [Probe], ?WAIT) =:= [self()]
                                 end, Peers)
                   end, Ms),
    ok = pg:leave(Probe, self()),
    R.

%% On each node (rpc): K idle processes (not linked to the rpc process) join Group.
spawn_members(Group, K) ->
    Pids = [spawn(fun idle/0) || _ <- lists:seq(1, K)],
    pg:join(Group, Pids).

members_loop(_G, 0) -> ok;
members_loop(G, N) ->
    case pg:get_members(G) of
        [_ | _] -> members_loop(G, N - 1);
        [] -> erlang:error(empty_group)
    end.

%% On B: forwards every join/leave of an {otpp_bench_j, _} group to A.
pg_watcher(A) ->
    {Ref, _} = pg:monitor_scope(),
    A ! {pg_watching, self()},
    pg_watch(A, Ref).
pg_watch(A, Ref) ->
    receive
        {Ref, Ev, {otpp_bench_j, _} = G, _Pids} -> A ! {pg_seen, Ev, G}, pg_watch(A, Ref);
        {Ref, _, _, _} -> pg_watch(A, Ref)
    after 600000 -> ok
    end.

join_cycles(_P, 0, Join, Vis) -> {Join, Vis};
join_cycles(P, N, Join, Vis) ->
    G = {otpp_bench_j, erlang:unique_integer([positive])},
    T0 = erlang:monotonic_time(),
    ok = pg:join(G, P),
    T1 = erlang:monotonic_time(),
    T2 = receive {pg_seen, join, G} -> erlang:monotonic_time()
         after ?WAIT -> erlang:error({timeout, pg_join_visible})
         end,
    ok = pg:leave(G, P),
    receive {pg_seen, leave, G} -> ok after ?WAIT -> erlang:error({timeout, pg_leave_visible}) end,
    join_cycles(P, N - 1, [elapsed(T0, T1) | Join], [elapsed(T0, T2) | Vis]).
