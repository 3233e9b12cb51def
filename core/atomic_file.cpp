// write_file_atomically: temporary file + fsync + rename, with a small streambuf over a POSIX descriptor.
#include "core/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <streambuf>
#include <system_error>
#include <vector>

#include "core/error.h"

namespace lora {

namespace {

std::string errno_text(int err) {
  return std::generic_category().message(err);
}

// A buffered output streambuf over a file descriptor that remembers the errno of the first failed write,
// so the caller can say why the stream went bad (std::ofstream cannot, and has no descriptor to fsync).
class FdStreamBuf : public std::streambuf {
 public:
  explicit FdStreamBuf(int fd) : fd_(fd), buffer_(1 << 16) { setp(buffer_.data(), buffer_.data() + buffer_.size()); }
  int error() const { return error_; }

 protected:
  int_type overflow(int_type ch) override {
    if (!flush_buffer()) return traits_type::eof();
    if (!traits_type::eq_int_type(ch, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(ch);
      pbump(1);
    }
    return traits_type::not_eof(ch);
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    if (n < static_cast<std::streamsize>(buffer_.size())) return std::streambuf::xsputn(s, n);
    // Large blocks (tensor data) skip the buffer.
    if (!flush_buffer() || !write_all(s, static_cast<size_t>(n))) return 0;
    return n;
  }
  int sync() override { return flush_buffer() ? 0 : -1; }

 private:
  bool flush_buffer() {
    const auto n = static_cast<size_t>(pptr() - pbase());
    if (n > 0 && !write_all(pbase(), n)) return false;
    setp(buffer_.data(), buffer_.data() + buffer_.size());
    return true;
  }
  bool write_all(const char* p, size_t n) {
    if (error_ != 0) return false;
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, std::min<size_t>(n, size_t{1} << 30));
      if (w < 0) {
        if (errno == EINTR) continue;
        error_ = errno;
        return false;
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }

  int fd_;
  int error_ = 0;
  std::vector<char> buffer_;
};

namespace fs = std::filesystem;

std::atomic<unsigned> g_counter{0};

// ".<name>.tmp.<pid>.<n>": the hidden name of a temporary (file or staging folder) for `target`.
std::string temporary_name(const fs::path& target) {
  return fmt::format(".{}.tmp.{}.{}", target.filename().string(), ::getpid(), g_counter++);
}

// Removes the temporaries left next to `target` by processes that no longer run (killed mid-write):
// names ".<target name>.tmp.<pid>.<n>" whose pid does not exist.
void remove_stale_temporaries(const fs::path& target) {
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string prefix = "." + target.filename().string() + ".tmp.";
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string rest = name.substr(prefix.size());
    const size_t dot = rest.find('.');
    if (dot == std::string::npos || dot == 0 || rest.find_first_not_of("0123456789") != dot) continue;
    const long pid = std::strtol(rest.substr(0, dot).c_str(), nullptr, 10);
    if (pid <= 0 || pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    std::error_code ignored;
    fs::remove_all(it->path(), ignored);
  }
}

// The process's umask, read without changing it (umask() would, for a moment, for every thread).
mode_t current_umask() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("Umask:", 0) == 0) return static_cast<mode_t>(std::strtol(line.c_str() + 6, nullptr, 8));
  }
  return 022;
}

// Opens a new, uniquely named temporary next to `path` (O_EXCL, so an existing file is never reused),
// readable and writable by its owner only.
int create_temporary(const fs::path& target, std::string& tmp_path) {
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  for (int attempt = 0; attempt < 100; ++attempt) {
    tmp_path = (dir / temporary_name(target)).string();
    const int fd = ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) return fd;
    if (errno != EEXIST) {
      LORA_FAIL("cannot write '{}': cannot create the temporary file '{}': {}", target.string(), tmp_path,
                errno_text(errno));
    }
  }
  LORA_FAIL("cannot write '{}': no free temporary file name in its directory", target.string());
}

void fsync_path(const fs::path& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write) {
  const std::filesystem::path target(path);
  LORA_CHECK(target.has_filename(), "cannot write '{}': the path does not name a file", path);
  remove_stale_temporaries(target);
  std::string tmp;
  int fd = create_temporary(target, tmp);
  try {
    {
      FdStreamBuf buf(fd);
      std::ostream out(&buf);
      write(out);
      out.flush();
      LORA_CHECK(out.good(), "cannot write '{}': writing the temporary file '{}' failed: {}", path, tmp,
                 buf.error() ? errno_text(buf.error()) : "stream error");
    }
    // The permissions of the file being replaced, or those a new file gets.
    struct stat st {};
    const mode_t mode =
        ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) ? (st.st_mode & 07777) : (0666 & ~current_umask());
    LORA_CHECK(::fchmod(fd, mode) == 0, "cannot write '{}': setting the mode of '{}' failed: {}", path, tmp,
               errno_text(errno));
    // The data must be on disk before the rename makes it visible: otherwise a crash could leave a
    // renamed but empty file in place of the old one.
    LORA_CHECK(::fsync(fd) == 0, "cannot write '{}': fsync of '{}' failed: {}", path, tmp, errno_text(errno));
    const int closed = ::close(fd);
    fd = -1;
    LORA_CHECK(closed == 0, "cannot write '{}': closing '{}' failed: {}", path, tmp, errno_text(errno));
    LORA_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "cannot write '{}': renaming '{}' into place failed: {}", path,
               tmp, errno_text(errno));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  // Make the rename itself durable (best effort: some file systems refuse fsync on a directory).
  fsync_path(target.has_parent_path() ? target.parent_path() : fs::path("."), O_RDONLY | O_DIRECTORY);
}

void write_directory_atomically(const std::string& dir_arg, const std::function<void(const std::string&)>& fill,
                                const std::function<bool(const std::string&)>& carry_over) {
  std::error_code ec;
  fs::path dir(dir_arg);
  while (dir.has_relative_path() && !dir.has_filename()) dir = dir.parent_path();  // "out/" -> "out"
  if (fs::is_symlink(dir, ec)) dir = fs::canonical(dir, ec);  // replace the folder it points at, not the link
  LORA_CHECK(!dir.empty() && dir.has_filename(), "cannot write the folder '{}': the path does not name a folder",
             dir_arg);
  const bool exists = fs::exists(dir, ec);
  LORA_CHECK(!exists || fs::is_directory(dir, ec), "cannot write the folder '{}': a file of that name exists", dir_arg);
  const fs::path parent = dir.has_parent_path() ? dir.parent_path() : fs::path(".");
  fs::create_directories(parent, ec);
  LORA_CHECK(!ec, "cannot write the folder '{}': cannot create '{}': {}", dir_arg, parent.string(), ec.message());
  remove_stale_temporaries(dir);

  const fs::path staging = parent / temporary_name(dir);
  LORA_CHECK(::mkdir(staging.c_str(), 0777) == 0, "cannot write the folder '{}': cannot create '{}': {}", dir_arg,
             staging.string(), errno_text(errno));
  try {
    fill(staging.string());
    if (exists && carry_over) {
      for (const auto& entry : fs::directory_iterator(dir)) {
        const std::string name = entry.path().filename().string();
        if (!entry.is_regular_file() || !carry_over(name) || fs::exists(staging / name)) continue;
        fs::create_hard_link(entry.path(), staging / name, ec);
        if (ec) fs::copy_file(entry.path(), staging / name);  // another file system under a mount point
      }
    }
    for (const auto& entry : fs::directory_iterator(staging)) {
      if (entry.is_regular_file()) fsync_path(entry.path(), O_RDONLY);
    }
    fsync_path(staging, O_RDONLY | O_DIRECTORY);
    if (exists) {
      // One atomic step: the new folder takes the old one's name, the old one the staging name.
      LORA_CHECK(::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0,
                 "cannot write the folder '{}': swapping in '{}' failed: {}", dir_arg, staging.string(),
                 errno_text(errno));
    } else {
      LORA_CHECK(::rename(staging.c_str(), dir.c_str()) == 0, "cannot write the folder '{}': renaming '{}' failed: {}",
                 dir_arg, staging.string(), errno_text(errno));
    }
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    throw;
  }
  fsync_path(parent, O_RDONLY | O_DIRECTORY);
  fs::remove_all(staging, ec);  // the retired old folder, when there was one
}

}  // namespace lora
