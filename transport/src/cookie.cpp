#include "otpp/transport/cookie.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>

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

result<std::string> create_cookie(const std::string& path) {
  std::array<std::uint8_t, 32> raw{};
  random_bytes(raw);
  static constexpr char hex[] = "0123456789abcdef";
  std::string cookie;
  for (auto b : raw) {
    cookie.push_back(hex[b >> 4]);
    cookie.push_back(hex[b & 15]);
  }
  // O_EXCL: never follow or reuse something another party put there in the meantime.
  fd_guard f{::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0400)};
  if (f.fd < 0) return cookie_failure(path, "cannot create: " + errno_text());
  if (::fchmod(f.fd, 0400) != 0) return cookie_failure(path, "fchmod: " + errno_text());
  std::string line = cookie + "\n";
  const char* p = line.data();
  std::size_t left = line.size();
  while (left > 0) {
    const ssize_t n = ::write(f.fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return cookie_failure(path, "write: " + errno_text());
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::fsync(f.fd) != 0) return cookie_failure(path, "fsync: " + errno_text());
  otpp::log(log_level::info, "transport", "created cookie file ", path, " (mode 0400)");
  return cookie;
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
  fd_guard f{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)};
  if (f.fd < 0) {
    if (errno == ENOENT) {
      auto created = create_cookie(path);
      if (created || created.error() != make_error_code(errc::cookie_error)) return created;
      // Lost a creation race with another process of this user: read its file below.
      f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
      if (f.fd < 0) return created;
    } else {
      return cookie_failure(path, "cannot open: " + errno_text());
    }
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

}  // namespace otpp::transport
