%% The gen_server the Erlang peer workloads talk to (mirrors the otpp bench server):
%%   cast {add, N}     -> count it; when an armed target is reached, tell the watcher
%%   call {lookup, K}  -> {ok, V} from a 64-entry map (small request, small reply)
%%   call {echo, X}    -> X (the remote calls: an integer or a binary, sent back)
%%   call {watch, Target, Pid} / reset / count
-module(otpp_peer_srv).
-behaviour(gen_server).
-export([start/0, start/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

start() -> gen_server:start(?MODULE, [], []).

%% off_heap mailbox: the setting under which OTP 25 parallelises many-to-one sends
start(off_heap) ->
    gen_server:start(?MODULE, [], [{spawn_opt, [{message_queue_data, off_heap}]}]).

%% state: {Count, Target, Watcher, Table}
init([]) ->
    Table = maps:from_list([{K, K * K} || K <- lists:seq(0, 63)]),
    {ok, {0, none, none, Table}}.

handle_cast({add, _}, {C0, Target, W, T}) ->
    C = C0 + 1,
    if C =:= Target -> W ! {all_handled, self(), C};
       true -> ok
    end,
    {noreply, {C, Target, W, T}};
handle_cast(_Other, S) ->
    {noreply, S}.

handle_call({lookup, K}, _From, S = {_, _, _, T}) ->
    {reply, maps:find(K, T), S};
handle_call({echo, X}, _From, S) ->
    {reply, X, S};
handle_call({watch, Target, Pid}, _From, {_, _, _, T}) ->
    {reply, ok, {0, Target, Pid, T}};
handle_call(reset, _From, {_, _, _, T}) ->
    {reply, ok, {0, none, none, T}};
handle_call(count, _From, S = {C, _, _, _}) ->
    {reply, C, S};
handle_call(ping, _From, S) ->
    {reply, pong, S}.

handle_info(_Msg, S) -> {noreply, S}.
