%% Erlang/OTP peer of otpp's `otpp_bench_remote`: two (for the join, four) BEAM
%% nodes on 127.0.0.1, distributed Erlang, the same result names and units, one
%% JSON object per line on stdout.  Reached through otpp_peer (`list`, `main`):
%%
%%   epmd -daemon -address 127.0.0.1            # run.sh does this (and epmd -kill)
%%   erl -name otpp_ra@127.0.0.1 -setcookie otpp_bench \
%%       -kernel inet_dist_use_interface '{127,0,0,1}' -kernel net_ticktime 4 \
%%       -noshell -pa ebin -run otpp_peer main remote.call_small
%%
%% The VM run.sh starts ("A", the driver) must be distributed (-name, -setcookie);
%% it starts its peers itself (open_port on `erl`, same cookie, interface and
%% net_ticktime) and measures on A.  Safety nets, so nothing outlives a run:
%%  * every peer halts when its stdin (a pipe from A) closes, i.e. when A halts,
%%    crashes or is killed, and after ?PEER_LIFETIME_S at the latest;
%%  * a peer stopped with SIGSTOP is SIGKILLed by a helper shell that also does
%%    so when A goes away (the helper ignores SIGTERM and reacts to EOF);
%%  * every wait is bounded; run.sh wraps A in `timeout`.
%% OTPP_BENCH_QUICK=1 in the environment divides the counts by 10 (smoke runs).
-module(otpp_remote).
-export([workloads/0, workload/1]).
-export([peer/1, peer_join/1]).                 % run on the peers (-run otpp_remote ...)
-export([emit/3, emit/4, ns/0, rate/3, nearest_rank/2, n/1,   % shared with otpp_registry
         with_peers/2, wait_until/2]).

-define(WAIT, 120000).          % ms: upper bound for any single wait
-define(PEER_UP_MS, 30000).     % ms: a peer must answer a ping within this
-define(PEER_LIFETIME_S, 600).  % s: a peer halts after this in any case

workloads() ->
    ["remote.call_small", "remote.call_1k", "remote.call_64k",
     "remote.call_c16", "remote.call_c64",
     "remote.cast_small", "remote.cast_1k", "remote.cast_64k",
     "remote.join", "remote.down.sigkill_ms", "remote.down.sigstop_ms"].

%% ------------------------------------------------------------------ counts
quick() -> os:getenv("OTPP_BENCH_QUICK", "") =:= "1".
n(N) -> case quick() of true -> max(1, N div 10); false -> N end.

-define(CALL_WARMUP, 5000).
-define(CALLS_SMALL, 50000).
-define(CALLS_1K, 20000).
-define(CALLS_64K, 3000).
-define(CONC_TOTAL, 32000).     % calls in all for 16 and for 64 callers
-define(CASTS_SMALL, 1000000).
-define(CASTS_1K, 200000).
-define(CASTS_64K, 20000).
-define(JOINS, 5).
-define(KILLS, 3).

%% ------------------------------------------------------------------ workloads
workload(Id) ->
    case node() of
        nonode@nohost ->
            erlang:error({not_distributed, "start this VM with -name x@127.0.0.1 -setcookie C"});
        _ -> ok
    end,
    run(Id).

run("remote.call_small") -> call_seq("remote.call_small", fun(I) -> I end, n(?CALLS_SMALL));
run("remote.call_1k") -> Bin = payload(1024), call_seq("remote.call_1k", fun(_) -> Bin end, n(?CALLS_1K));
run("remote.call_64k") -> Bin = payload(65536), call_seq("remote.call_64k", fun(_) -> Bin end, n(?CALLS_64K));
run("remote.call_c16") -> call_conc("remote.call_c16", 16);
run("remote.call_c64") -> call_conc("remote.call_c64", 64);
run("remote.cast_small") -> cast_1p("remote.cast_small", fun(I) -> I end, n(?CASTS_SMALL));
run("remote.cast_1k") -> Bin = payload(1024), cast_1p("remote.cast_1k", fun(_) -> Bin end, n(?CASTS_1K));
run("remote.cast_64k") -> Bin = payload(65536), cast_1p("remote.cast_64k", fun(_) -> Bin end, n(?CASTS_64K));
run("remote.join") -> join();
run("remote.down.sigkill_ms") -> down_sigkill();
run("remote.down.sigstop_ms") -> down_sigstop().

payload(Size) -> binary:copy(<<"x">>, Size).

%% ------------------------------------------------------------------ output
emit(Name, Unit, Value) -> emit(Name, Unit, Value, []).
emit(Name, Unit, Value, Extra) ->
    Fields = [io_lib:format(",\"~s\":~s", [K, num(V)]) || {K, V} <- Extra],
    io:format("{\"name\":\"~s\",\"unit\":\"~s\",\"value\":~s~s}~n", [Name, Unit, num(Value), Fields]).

num(V) when is_integer(V) -> integer_to_list(V);
num(V) -> float_to_list(float(V), [{decimals, 3}, compact]).

ns() -> erlang:monotonic_time(nanosecond).
ms_between(T0, T1) -> (T1 - T0) / 1.0e6.                   % ns -> ms
rate(Count, T0, T1) -> Count * 1.0e9 / max(1, T1 - T0).
deadline(Ms) -> ns() + Ms * 1000000.
left_ms(D) -> max(0, (D - ns()) div 1000000).

nearest_rank(SortedTuple, P) ->
    N = tuple_size(SortedTuple),
    element(max(1, min(N, ceil(N * P / 100))), SortedTuple).

median(L) -> nearest_rank(list_to_tuple(lists:sort(L)), 50).

log(Fmt, Args) -> io:format(standard_error, Fmt ++ "~n", Args).

%% ------------------------------------------------------------------ calls
%% One caller on A, sequential gen_server:call to a gen_server on B; the request
%% {echo, X} is answered with X (an integer, or the same binary back).
call_seq(Id, ReqF, N) ->
    with_peers(1, fun([B]) ->
        S = server_on(B),
        _ = calls(S, ReqF, min(?CALL_WARMUP, N)),
        T0 = ns(),
        Lat = calls(S, ReqF, N),
        T1 = ns(),
        Sorted = list_to_tuple(lists:sort(Lat)),
        emit(Id ++ ".p50", "us", nearest_rank(Sorted, 50) / 1000),
        emit(Id ++ ".p99", "us", nearest_rank(Sorted, 99) / 1000),
        emit(Id ++ ".throughput", "call/s", rate(N, T0, T1))
    end).

%% C callers on A (C processes, each sequential) to one gen_server on B.
call_conc(Id, C) ->
    Per = max(1, n(?CONC_TOTAL) div C),
    with_peers(1, fun([B]) ->
        S = server_on(B),
        _ = calls(S, fun(I) -> I end, min(?CALL_WARMUP, Per * C)),
        Self = self(),
        Callers = [spawn_link(fun() ->
                       receive go -> ok after ?WAIT -> exit(no_go) end,
                       Self ! {lats, self(), calls(S, fun(I) -> I end, Per)}
                   end) || _ <- lists:seq(1, C)],
        T0 = ns(),
        [P ! go || P <- Callers],
        All = [receive {lats, P, L} -> L after ?WAIT -> erlang:error({timeout, caller}) end
               || P <- Callers],
        T1 = ns(),
        Sorted = list_to_tuple(lists:sort(lists:append(All))),
        emit(Id ++ ".throughput", "call/s", rate(Per * C, T0, T1)),
        emit(Id ++ ".p50", "us", nearest_rank(Sorted, 50) / 1000),
        emit(Id ++ ".p99", "us", nearest_rank(Sorted, 99) / 1000)
    end).

%% Sequential calls; returns the latency of each (ns).
calls(S, ReqF, N) -> calls(S, ReqF, N, []).
calls(_S, _ReqF, 0, Acc) -> Acc;
calls(S, ReqF, N, Acc) ->
    X = ReqF(N),
    T0 = erlang:monotonic_time(),
    R = gen_server:call(S, {echo, X}, ?WAIT),
    T1 = erlang:monotonic_time(),
    X = R,                                   % echoed (checked outside the timed part)
    calls(S, ReqF, N - 1, [erlang:convert_time_unit(T1 - T0, native, nanosecond) | Acc]).

%% ------------------------------------------------------------------ casts
%% One process on A casts N {add, X} to a counting gen_server on B; timed from
%% the first cast until B reports (a message to A) that it has handled the Nth.
cast_1p(Id, MsgF, N) ->
    with_peers(1, fun([B]) ->
        S = server_on(B),
        _ = cast_round(S, MsgF, max(1, N div 10)),            % warm-up
        {T0, T1, T2, Got} = cast_round(S, MsgF, N),
        Lost = N - Got,
        Lost =:= 0 orelse log("WARN ~s: ~b of ~b casts lost", [Id, Lost, N]),
        emit(Id ++ ".throughput", "msg/s", rate(Got, T0, T2),
             [{"lost", Lost}, {"send_rate", rate(N, T0, T1)}])
    end).

cast_round(S, MsgF, N) ->
    ok = gen_server:call(S, {watch, N, self()}, ?WAIT),
    T0 = ns(),
    cast_n(S, MsgF, N),
    T1 = ns(),
    receive
        {all_handled, S, N} -> {T0, T1, ns(), N}
    after ?WAIT ->
        T2 = ns(),
        {T0, T1, T2, gen_server:call(S, count, ?WAIT)}
    end.

cast_n(_S, _F, 0) -> ok;
cast_n(S, F, N) -> gen_server:cast(S, {add, F(N)}), cast_n(S, F, N - 1).

%% ------------------------------------------------------------------ join
%% A, B and C form a full mesh; a fresh node D (connected to nobody) calls
%% net_kernel:connect_node(B) and waits until it is connected to all 3 (global's
%% transitive connect does the rest).  D measures and prints its times; ?JOINS
%% rounds, each with a new D; the median is printed.
join() ->
    with_peers(2, fun([B, C]) ->
        pong = rpc:call(B, net_adm, ping, [C], ?WAIT),
        ok = global:sync(),
        ok = wait_until(fun() -> length(rpc:call(B, erlang, nodes, [])) >= 2 andalso
                                 length(rpc:call(C, erlang, nodes, [])) >= 2 end, 10000),
        Rounds = [join_once(B) || _ <- lists:seq(1, n_joins())],
        {Connect, Mesh, Sync} = lists:unzip3(Rounds),
        emit("remote.join.full_mesh_ms", "ms", median(Mesh),
             [{"connect_ms", median(Connect)}, {"global_sync_ms", median(Sync)},
              {"min_ms", lists:min(Mesh)}, {"max_ms", lists:max(Mesh)},
              {"rounds", length(Mesh)}])
    end).

n_joins() -> case quick() of true -> 2; false -> ?JOINS end.

join_once(Seed) ->
    Peer = #{node := D} = spawn_peer("d", ["peer_join", lifetime(), atom_to_list(Seed), "3"]),
    Result = receive
                 {peer_line, D, "JOIN " ++ Rest} ->
                     [Us1, Us2, Us3] = [list_to_integer(X) || X <- string:lexemes(Rest, " ")],
                     {Us1 / 1000, Us2 / 1000, Us3 / 1000};
                 {peer_line, D, "JOINFAIL" ++ _ = L} -> erlang:error({join_failed, L});
                 {peer_exit, D, St} -> erlang:error({joiner_exited, St})
             after ?WAIT -> erlang:error({timeout, join})
             end,
    stop_peer(Peer),
    %% D is gone for B and C too before the next round
    ok = wait_until(fun() -> not lists:member(D, rpc:call(Seed, erlang, nodes, [])) end, 10000),
    Result.

%% ------------------------------------------------------------------ node down
%% monitor_node on A for B, SIGKILL B's OS process, time until {nodedown, B}.
%% The kill is sent by a shell started beforehand and blocked in `read`, so the
%% timed trigger is a pipe write (no fork/exec inside the timed region);
%% trigger_ms is when that shell reported the kill done.
down_sigkill() ->
    Rounds = [down_once(kill) || _ <- lists:seq(1, n_kills())],
    {Down, Trig} = lists:unzip(Rounds),
    emit("remote.down.sigkill_ms", "ms", median(Down),
         [{"trigger_ms", median(Trig)}, {"min_ms", lists:min(Down)},
          {"max_ms", lists:max(Down)}, {"rounds", length(Down)}]).

n_kills() -> case quick() of true -> 1; false -> ?KILLS end.

%% SIGSTOP B (socket open, no answer): time until {nodedown, B}.  Distributed
%% Erlang downs a silent peer after net_ticktime +- 25%: bound_ms is the upper end.
down_sigstop() ->
    TT = net_kernel:get_net_ticktime(),
    {Down, Trig} = down_once(stop),
    emit("remote.down.sigstop_ms", "ms", Down,
         [{"bound_ms", TT * 1250}, {"net_ticktime_s", TT}, {"trigger_ms", Trig}]).

down_once(Mode) ->
    with_peers(1, fun([B]) ->
        OsPid = rpc:call(B, os, getpid, [], ?WAIT),
        true = is_list(OsPid) andalso OsPid =/= [] andalso lists:all(fun(Ch) -> Ch >= $0 andalso Ch =< $9 end, OsPid),
        Trigger = trigger(Mode, OsPid),
        timer:sleep(200),                                      % let the connection go quiet
        flush_nodedowns(B),
        true = erlang:monitor_node(B, true),
        T0 = ns(),
        true = port_command(Trigger, "go\n"),
        TT = net_kernel:get_net_ticktime(),
        {TN, TS} = wait_down(B, Trigger, undefined, undefined, deadline(3 * TT * 1000 + 10000)),
        TN =/= undefined orelse erlang:error({no_nodedown, B}),
        TS =/= undefined orelse erlang:error({trigger_silent, B}),
        case Mode of
            stop ->                                            % B is stopped: kill it now
                catch port_command(Trigger, "done\n"),
                receive {Trigger, {data, {eol, "killed"}}} -> ok after 10000 -> ok end;
            kill -> ok
        end,
        catch port_close(Trigger),
        {ms_between(T0, TN), ms_between(T0, TS)}
    end).

%% A shell, started before the timed region and blocked reading its stdin:
%% on "go" it signals Pid; in stop mode it then waits for one more line (or EOF,
%% when A goes away) and SIGKILLs the stopped node.  It ignores SIGTERM (run.sh's
%% `timeout` signals the whole process group) so that EOF still reaches it.
trigger(kill, Pid) ->
    sh("trap '' TERM; read x || exit 0; kill -KILL " ++ Pid ++ "; echo sent");
trigger(stop, Pid) ->
    sh("trap '' TERM; read x || exit 0; kill -STOP " ++ Pid ++ "; echo sent; "
       "read y; kill -KILL " ++ Pid ++ " 2>/dev/null; echo killed").

sh(Script) ->
    open_port({spawn_executable, "/bin/sh"},
              [{args, ["-c", Script]}, {line, 256}, use_stdio, exit_status]).

wait_down(_B, _P, TN, TS, _D) when TN =/= undefined, TS =/= undefined -> {TN, TS};
wait_down(B, P, TN, TS, D) ->
    receive
        {nodedown, B} -> wait_down(B, P, ns(), TS, D);
        {P, {data, {eol, "sent"}}} -> wait_down(B, P, TN, ns(), D);
        {P, {exit_status, St}} when TS =:= undefined -> erlang:error({trigger_failed, St})
    after left_ms(D) -> {TN, TS}
    end.

flush_nodedowns(B) ->
    receive {nodedown, B} -> flush_nodedowns(B) after 0 -> ok end.

%% ------------------------------------------------------------------ peers
%% with_peers(K, Fun): start K peer nodes, run Fun([Node...]), stop the peers
%% (also when Fun fails).
with_peers(K, Fun) ->
    Peers = [start_peer(Tag) || Tag <- lists:sublist(["b", "c", "e"], K)],
    try Fun([maps:get(node, P) || P <- Peers])
    after [stop_peer(P) || P <- Peers]
    end.

%% The gen_server on B (otpp_peer_srv, not linked to anything).
server_on(B) ->
    {ok, S} = rpc:call(B, otpp_peer_srv, start, [], ?WAIT),
    S.

start_peer(Tag) ->
    Peer = #{node := Node} = spawn_peer(Tag, ["peer", lifetime()]),
    ok = wait_pong(Node, deadline(?PEER_UP_MS)),
    Peer.

%% Starts `erl` for a new node; a port owner process (linked to the caller)
%% keeps the pipe, forwards the lines starting with JOIN to the caller and
%% passes the rest to stderr, so that nothing lands in the measuring mailbox.
spawn_peer(Tag, RunArgs) ->
    Name = lists:flatten(io_lib:format("otpp_r~s_~s_~b",
               [Tag, os:getpid(), erlang:unique_integer([positive])])),
    Node = list_to_atom(Name ++ "@127.0.0.1"),
    Erl = case os:find_executable("erl") of
              false -> erlang:error(no_erl_on_path);
              E -> E
          end,
    Ebin = filename:dirname(code:which(?MODULE)),
    Args = ["-name", atom_to_list(Node),
            "-setcookie", atom_to_list(erlang:get_cookie()),
            "-kernel", "inet_dist_use_interface", "{127,0,0,1}",
            "-kernel", "net_ticktime", integer_to_list(net_kernel:get_net_ticktime()),
            "-noshell", "-pa", Ebin,
            "-run", "otpp_remote" | RunArgs],
    Parent = self(),
    Owner = spawn_link(fun() ->
                Port = open_port({spawn_executable, Erl},
                                 [{args, Args}, {line, 4096}, stderr_to_stdout, exit_status,
                                  {env, [{"ERL_EPMD_ADDRESS", "127.0.0.1"},
                                         {"ERL_CRASH_DUMP_SECONDS", "0"}]}]),
                Parent ! {self(), opened},
                owner_loop(Parent, Node, Port)
            end),
    receive {Owner, opened} -> ok after ?WAIT -> erlang:error({timeout, open_port}) end,
    #{node => Node, owner => Owner}.

owner_loop(Parent, Node, Port) ->
    receive
        {Port, {data, {eol, "JOIN" ++ _ = L}}} ->
            Parent ! {peer_line, Node, L}, owner_loop(Parent, Node, Port);
        {Port, {data, {_, L}}} ->
            log("[~s] ~s", [Node, L]), owner_loop(Parent, Node, Port);
        {Port, {exit_status, St}} ->
            Parent ! {peer_exit, Node, St};
        close ->
            catch port_close(Port)
    end.

lifetime() -> integer_to_list(?PEER_LIFETIME_S).

wait_pong(Node, Deadline) ->
    case net_adm:ping(Node) of
        pong -> ok;
        pang ->
            receive {peer_exit, Node, St} -> erlang:error({peer_exited, Node, St})
            after 20 -> ok
            end,
            ns() > Deadline andalso erlang:error({peer_not_up, Node}),
            wait_pong(Node, Deadline)
    end.

%% Close the peer's stdin (it halts on EOF) and wait for its nodedown (bounded).
stop_peer(#{node := Node, owner := Owner}) ->
    Connected = lists:member(Node, nodes()),
    Connected andalso erlang:monitor_node(Node, true),
    Owner ! close,
    Connected andalso receive {nodedown, Node} -> ok after 10000 -> log("WARN ~s did not go down", [Node]) end,
    flush_peer_msgs(Node).

flush_peer_msgs(Node) ->
    receive
        {nodedown, Node} -> flush_peer_msgs(Node);
        {peer_line, Node, _} -> flush_peer_msgs(Node);
        {peer_exit, Node, _} -> flush_peer_msgs(Node)
    after 0 -> ok
    end.

wait_until(Pred, Ms) -> wait_until(Pred, deadline(Ms), Ms).
wait_until(Pred, D, Ms) ->
    case Pred() of
        true -> ok;
        false ->
            case ns() > D of
                true -> erlang:error({timeout, wait_until, Ms});
                false -> timer:sleep(5), wait_until(Pred, D, Ms)
            end
    end.

%% ================================================================== on the peers
%% `-run otpp_remote peer LifetimeS`: halt when stdin closes (A went away) and
%% after LifetimeS at the latest.
peer([LifetimeS]) ->
    spawn(fun() ->
              _ = io:get_line(''),                  % eof when A's port closes
              erlang:halt(0)
          end),
    {ok, _} = timer:apply_after(list_to_integer(LifetimeS) * 1000, erlang, halt, [0]),
    ok.

%% `-run otpp_remote peer_join LifetimeS Seed N`: connect to Seed only, wait until
%% connected to N nodes (full mesh), then global:sync(); print
%% "JOIN <connect_us> <full_mesh_us> <global_sync_us>" (from before the connect).
peer_join([LifetimeS, Seed, NStr]) ->
    peer([LifetimeS]),
    SeedNode = list_to_atom(Seed),
    N = list_to_integer(NStr),
    T0 = erlang:monotonic_time(),
    true = net_kernel:connect_node(SeedNode),
    T1 = erlang:monotonic_time(),
    Deadline = T0 + erlang:convert_time_unit(10, second, native),
    case wait_nodes(N, Deadline) of
        ok ->
            T2 = erlang:monotonic_time(),
            ok = global:sync(),
            T3 = erlang:monotonic_time(),
            U = fun(T) -> erlang:convert_time_unit(T - T0, native, microsecond) end,
            io:format("JOIN ~b ~b ~b~n", [U(T1), U(T2), U(T3)]);
        timeout ->
            io:format("JOINFAIL nodes=~p~n", [nodes()])
    end.

wait_nodes(N, Deadline) ->
    case length(nodes()) >= N of
        true -> ok;
        false ->
            case erlang:monotonic_time() > Deadline of
                true -> timeout;
                false -> receive after 1 -> wait_nodes(N, Deadline) end
            end
    end.
