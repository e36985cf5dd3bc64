// Everything a single-node application needs.
#pragma once

#include "otpp/call.hpp"
#include "otpp/domain_error.hpp"
#include "otpp/error.hpp"
#include "otpp/gen_server.hpp"
#include "otpp/gen_statem.hpp"
#include "otpp/log.hpp"
#include "otpp/message.hpp"
#include "otpp/node.hpp"
#include "otpp/pid.hpp"
#include "otpp/process.hpp"
#include "otpp/result.hpp"
