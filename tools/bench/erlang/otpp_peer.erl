%% Erlang/OTP peer of otpp's `otpp_bench_local` (and, through otpp_remote, of
%% `otpp_bench_remote`): the same workloads, the same result names and units,
%% one JSON object per line on stdout.
%%
%%   erl -noshell -pa ebin -run otpp_peer main <workload>
%%   erl -noshell -pa ebin -run otpp_peer main list      % prints the workload ids
%%
%% The remote.* (otpp_remote.erl) and registry.* (otpp_registry.erl) workloads
%% need a distributed VM: see there.
%%
%% A workload id is the prefix of the result names it prints.  run.sh starts one
%% fresh VM per workload.  Counts are fixed, every receive has a timeout, and
%% run.sh wraps each VM in `timeout`.  Lines not starting with '{' are logs.
-module(otpp_peer).
-export([main/1]).

-define(WAIT, 120000).   % ms: upper bound for any single wait

workloads() ->
    ["local.cast_1p", "local.cast_4p", "local.cast_4p_offheap",
     "local.call_seq", "local.pingpong",
     "local.spawn.idle_rate", "local.spawn.gen_server_start_rate",
     "local.mem", "local.ring"] ++ otpp_remote:workloads() ++ otpp_registry:workloads().

main(["list"]) ->
    [io:format("~s~n", [W]) || W <- workloads()],
    halt(0);
main([Id]) ->
    case lists:member(Id, workloads()) of
        false ->
            io:format("ERROR unknown workload ~s~n", [Id]),
            halt(2);
        true ->
            try
                workload(Id)
            catch
                Class:Reason:Stack ->
                    io:format("ERROR ~s ~p:~p ~p~n", [Id, Class, Reason, Stack]),
                    halt(1)
            end,
            halt(0)
    end.

%% ------------------------------------------------------------------ output
emit(Name, Unit, Value) ->
    io:format("{\"name\":\"~s\",\"unit\":\"~s\",\"value\":~s}~n",
              [Name, Unit, float_to_list(float(Value), [{decimals, 3}, compact])]).

ns() -> erlang:monotonic_time(nanosecond).

rate(Count, T0, T1) -> Count * 1.0e9 / max(1, T1 - T0).

await(Tag, What) ->
    receive
        {Tag, _, X} -> X
    after ?WAIT -> erlang:error({timeout, What})
    end.

%% ------------------------------------------------------------------ workloads
workload("remote." ++ _ = Id) ->
    otpp_remote:workload(Id);
workload("registry." ++ _ = Id) ->
    otpp_registry:workload(Id);

workload("local.cast_1p") ->
    {ok, Srv} = otpp_peer_srv:start(),
    _ = cast_round(Srv, 1, 100000),                     % warm-up
    {T0, T1} = cast_round(Srv, 1, 2000000),
    emit("local.cast_1p.throughput", "msg/s", rate(2000000, T0, T1));

workload("local.cast_4p") ->
    {ok, Srv} = otpp_peer_srv:start(),
    _ = cast_round(Srv, 4, 100000),                     % warm-up
    {T0, T1} = cast_round(Srv, 4, 2000000),
    emit("local.cast_4p.throughput", "msg/s", rate(2000000, T0, T1));

%% Erlang only (no otpp counterpart): the same with an off_heap server mailbox,
%% Erlang's best setting for many senders to one receiver.
workload("local.cast_4p_offheap") ->
    {ok, Srv} = otpp_peer_srv:start(off_heap),
    _ = cast_round(Srv, 4, 100000),
    {T0, T1} = cast_round(Srv, 4, 2000000),
    emit("local.cast_4p_offheap.throughput", "msg/s", rate(2000000, T0, T1));

workload("local.call_seq") ->
    {ok, Srv} = otpp_peer_srv:start(),
    _ = calls(Srv, 20000, []),                          % warm-up
    N = 300000,
    T0 = ns(),
    Lat = calls(Srv, N, []),
    T1 = ns(),
    emit("local.call_seq.throughput", "call/s", rate(N, T0, T1)),
    Sorted = list_to_tuple(lists:sort(Lat)),
    emit("local.call_seq.p50", "us", nearest_rank(Sorted, 50) / 1000),
    emit("local.call_seq.p99", "us", nearest_rank(Sorted, 99) / 1000);

workload("local.pingpong") ->
    Echo = spawn_link(fun echo/0),
    ping(Echo, 10000),                                  % warm-up
    N = 1000000,
    T0 = ns(),
    ping(Echo, N),
    T1 = ns(),
    emit("local.pingpong.roundtrips", "rt/s", rate(N, T0, T1));

workload("local.spawn.idle_rate") ->
    N = 200000,
    T0 = ns(),
    spawn_idle(N),
    T1 = ns(),
    emit("local.spawn.idle_rate", "spawn/s", rate(N, T0, T1));

workload("local.spawn.gen_server_start_rate") ->
    _ = start_servers(1000),                            % warm-up (servers stay up)
    N = 20000,
    T0 = ns(),
    ok = start_servers(N),
    T1 = ns(),
    emit("local.spawn.gen_server_start_rate", "start/s", rate(N, T0, T1));

workload("local.mem") ->
    N = 100000,
    erlang:garbage_collect(),
    M0 = erlang:memory(processes),
    spawn_idle(N),                                      % pids are not kept
    settle(50),
    M1 = erlang:memory(processes),
    emit("local.mem.per_idle_process_bytes", "bytes", (M1 - M0) / N);

workload("local.ring") ->
    Size = 1000, Laps = 1000,
    First = make_ring(Size),
    Hops = Size * Laps,
    T0 = ns(),
    First ! {token, Hops - 1},
    _ = await(ring_done, ring),
    T1 = ns(),
    emit("local.ring.hops", "hops/s", rate(Hops, T0, T1)).

%% ------------------------------------------------------------------ casts
%% P producers cast Total {add, _} messages in all to Srv; returns {Go, Done}:
%% Go is just before the producers are released, Done when the server reports
%% it has handled the last of them.
cast_round(Srv, P, Total) ->
    Per = Total div P,
    ok = gen_server:call(Srv, {watch, Per * P, self()}, ?WAIT),
    Producers = [spawn_link(fun() -> producer(Srv, Per) end) || _ <- lists:seq(1, P)],
    T0 = ns(),
    lists:foreach(fun(Pid) -> Pid ! go end, Producers),
    Expected = Per * P,
    Expected = await(all_handled, cast_round),
    T1 = ns(),
    {T0, T1}.

producer(Srv, N) ->
    receive go -> cast_n(Srv, N)
    after ?WAIT -> exit(no_go)
    end.

cast_n(_Srv, 0) -> ok;
cast_n(Srv, N) ->
    gen_server:cast(Srv, {add, N}),
    cast_n(Srv, N - 1).

%% ------------------------------------------------------------------ calls
%% Sequential calls; returns the latency of each (ns).
calls(_Srv, 0, Acc) -> Acc;
calls(Srv, N, Acc) ->
    Key = N band 63,
    T0 = erlang:monotonic_time(),
    {ok, _} = gen_server:call(Srv, {lookup, Key}, ?WAIT),
    T1 = erlang:monotonic_time(),
    calls(Srv, N - 1, [erlang:convert_time_unit(T1 - T0, native, nanosecond) | Acc]).

nearest_rank(SortedTuple, P) ->
    N = tuple_size(SortedTuple),
    element(max(1, min(N, ceil(N * P / 100))), SortedTuple).

%% ------------------------------------------------------------------ ping-pong
echo() ->
    receive
        {ping, From} -> From ! pong, echo()
    after ?WAIT -> ok
    end.

ping(_Echo, 0) -> ok;
ping(Echo, N) ->
    Echo ! {ping, self()},
    receive pong -> ping(Echo, N - 1)
    after ?WAIT -> erlang:error(pingpong_timeout)
    end.

%% ------------------------------------------------------------------ spawn / memory
idle() ->
    receive stop -> ok
    after 300000 -> ok
    end.

spawn_idle(0) -> ok;
spawn_idle(N) -> _ = spawn(fun idle/0), spawn_idle(N - 1).

start_servers(0) -> ok;
start_servers(N) ->
    {ok, _} = gen_server:start(otpp_peer_nop, [], []),
    start_servers(N - 1).

%% Wait until every spawned process has run and blocked in receive (run queues
%% empty), polling every 10 ms, Tries times at most; then a short grace period.
settle(0) -> ok;
settle(Tries) ->
    case erlang:statistics(total_run_queue_lengths_all) of
        0 -> timer:sleep(100);
        _ -> timer:sleep(10), settle(Tries - 1)
    end.

%% ------------------------------------------------------------------ ring
%% Size processes, each forwarding {token, K} to the next with K - 1; the one
%% that receives {token, 0} tells the driver.  Returns the first process.
make_ring(Size) ->
    Driver = self(),
    Pids = [spawn_link(fun() -> ring_wait(Driver) end) || _ <- lists:seq(1, Size)],
    [First | Rest] = Pids,
    lists:foreach(fun({P, Next}) -> P ! {next, Next} end,
                  lists:zip(Pids, Rest ++ [First])),
    First.

ring_wait(Driver) ->
    receive {next, Next} -> ring_node(Next, Driver)
    after ?WAIT -> ok
    end.

ring_node(Next, Driver) ->
    receive
        {token, 0} -> Driver ! {ring_done, self(), ok}, ring_node(Next, Driver);
        {token, K} -> Next ! {token, K - 1}, ring_node(Next, Driver)
    after ?WAIT -> ok
    end.
