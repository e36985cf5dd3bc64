%% Smallest possible gen_server: used where only spawn + init handshake is measured.
-module(otpp_peer_nop).
-behaviour(gen_server).
-export([init/1, handle_call/3, handle_cast/2]).

init(Arg) -> {ok, Arg}.
handle_call(_Req, _From, S) -> {reply, ok, S}.
handle_cast(_Msg, S) -> {noreply, S}.
