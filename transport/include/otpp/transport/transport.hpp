// otpp::transport umbrella header.
#pragma once

#include "otpp/transport/config.hpp"
#include "otpp/transport/connection.hpp"
#include "otpp/transport/cookie.hpp"
#include "otpp/transport/crypto.hpp"
#include "otpp/transport/endpoint.hpp"
#include "otpp/transport/frame.hpp"
#include "otpp/transport/handshake.hpp"
