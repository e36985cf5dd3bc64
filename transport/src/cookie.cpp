#include "otpp/transport/cookie.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "otpp/log.hpp"
#include "otpp/transport/crypto.hpp"

namespace otpp::transport {

namespace {
failure cookie_failure(const std::string& path, std::string what) {
  return failure(errc::cookie_error, "cookie file " + path + ": " + std::move(what));
}

std::string errno_text() {
  return std::strerror(errno);
}

struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

enum class create_outcome { created, exists, failed };

// Writes the cookie to a private temporary file and links it into place: link() never
// replaces an existing file and makes the complete file appear at once, so a concurrent
// reader sees no file or the whole cookie, never an empty one, and a crash leaves at most a
// stray temporary file (never an empty cookie).
create_outcome create_cookie(const std::string& path, std::string& cookie, failure& error) {
  std::array<std::uint8_t, 32> raw{};
  random_bytes(raw);
  static constexpr char hex[] = "0123456789abcdef";
  cookie.clear();
  for (auto b : raw) {
    cookie.push_back(hex[b >> 4]);
    cookie.push_back(hex[b & 15]);
  }
  std::string tmp = path + ".tmp.XXXXXX";
  fd_guard f{::mkostemp(tmp.data(), O_CLOEXEC)};  // mode 0600, a fresh name
  if (f.fd < 0) {
    error = cookie_failure(path, "cannot create a temporary file: " + errno_text());
    return create_outcome::failed;
  }
  const auto discard = [&](std::string what) {
    error = cookie_failure(path, std::move(what));
    ::unlink(tmp.c_str());
    return create_outcome::failed;
  };
  if (!write_all(f.fd, cookie + "\n")) return discard("write: " + errno_text());
  if (::fchmod(f.fd, 0400) != 0) return discard("fchmod: " + errno_text());
  if (::fsync(f.fd) != 0) return discard("fsync: " + errno_text());
  const int rc = ::link(tmp.c_str(), path.c_str());
  const int link_errno = errno;
  ::unlink(tmp.c_str());
  if (rc == 0) {
    otpp::log(log_level::info, "transport", "created cookie file ", path, " (mode 0400)");
    return create_outcome::created;
  }
  if (link_errno == EEXIST) return create_outcome::exists;  // another creator won: read theirs
  error = cookie_failure(path, std::string("link into place: ") + std::strerror(link_errno));
  return create_outcome::failed;
}

// Reads and checks the cookie file; `missing` is set (and the failure meaningless) when
// there is no file at the path.
result<std::string> read_cookie(const std::string& path, bool& missing) {
  missing = false;
  // O_NONBLOCK: a FIFO (or device) planted at the path must not block open(); it is
  // refused below as not a regular file. O_NOFOLLOW: a symlink is refused (ELOOP).
  fd_guard f{::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW)};
  if (f.fd < 0) {
    if (errno == ENOENT) {
      missing = true;
      return cookie_failure(path, "does not exist");
    }
    if (errno == ELOOP) return cookie_failure(path, "is a symbolic link");
    return cookie_failure(path, "cannot open: " + errno_text());
  }
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) return cookie_failure(path, "fstat: " + errno_text());
  if (!S_ISREG(st.st_mode)) return cookie_failure(path, "not a regular file");
  if (st.st_uid != ::geteuid()) return cookie_failure(path, "not owned by the current user");
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
    return cookie_failure(path, "accessible by group or others (chmod 400 it)");
  if (st.st_size > 4096) return cookie_failure(path, "too large");
  std::string content(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t got = 0;
  while (got < content.size()) {
    const ssize_t n = ::read(f.fd, content.data() + got, content.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return cookie_failure(path, "read: " + errno_text());
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  content.resize(got);
  while (!content.empty() && (content.back() == '\n' || content.back() == '\r' ||
                              content.back() == ' ' || content.back() == '\t'))
    content.pop_back();
  if (content.empty()) return cookie_failure(path, "empty");
  return content;
}
}  // namespace

std::string default_cookie_path() {
  // (Built by construction and append: assigning a char* trips g++ 12 -O3 -Wrestrict.)
  const char* home = std::getenv("HOME");
  if (home == nullptr || *home == '\0') {
    const passwd* pw = ::getpwuid(::getuid());
    home = pw != nullptr && pw->pw_dir != nullptr && *pw->pw_dir != '\0' ? pw->pw_dir : ".";
  }
  std::string path(home);
  path.append("/.otpp.cookie");
  return path;
}

result<std::string> load_or_create_cookie(const std::string& path) {
  // Read; if missing, create; if another creator won the race, read theirs. The loop is
  // bounded: it only repeats when the file vanished between two steps.
  for (int attempt = 0; attempt < 3; ++attempt) {
    bool missing = false;
    auto content = read_cookie(path, missing);
    if (!missing) return content;
    std::string cookie;
    failure error;
    switch (create_cookie(path, cookie, error)) {
      case create_outcome::created:
        return cookie;
      case create_outcome::exists:
        continue;
      case create_outcome::failed:
        return error;
    }
  }
  return cookie_failure(path, "appears and disappears repeatedly");
}

}  // namespace otpp::transport
