// Per-user cookie file (Erlang's model): the shared secret when none is configured.
#pragma once

#include <string>

#include "otpp/result.hpp"

namespace otpp::transport {

// $HOME/.otpp.cookie (the password database's home directory when HOME is unset).
std::string default_cookie_path();

// Reads the cookie at `path`; when the file does not exist, creates it atomically (a
// temporary file of 32 random bytes, hex encoded, mode 0400, linked into place: a
// concurrent reader never sees it empty, a concurrent creator reads the winner's). Refuses
// (errc::cookie_error) a path that is a symbolic link or not a regular file (a FIFO is
// refused without blocking), a file not owned by the current user, readable or writable by
// group or others, or empty.
result<std::string> load_or_create_cookie(const std::string& path);

}  // namespace otpp::transport
