// write_file_atomically: temporary file + fsync + rename, with a small streambuf over a POSIX descriptor.
#include "core/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <streambuf>
#include <system_error>
#include <vector>

#include "core/error.h"

namespace lora {

namespace {

std::string errno_text(int err) { return std::generic_category().message(err); }

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

// Opens a new, uniquely named temporary next to `path` (O_EXCL, so an existing file is never reused).
int create_temporary(const std::filesystem::path& target, std::string& tmp_path) {
  static std::atomic<unsigned> counter{0};
  const std::filesystem::path dir = target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
  for (int attempt = 0; attempt < 100; ++attempt) {
    tmp_path = (dir / fmt::format(".{}.tmp.{}.{}", target.filename().string(), ::getpid(), counter++)).string();
    const int fd = ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) return fd;
    if (errno != EEXIST) {
      LORA_FAIL("cannot write '{}': cannot create the temporary file '{}': {}", target.string(), tmp_path,
                errno_text(errno));
    }
  }
  LORA_FAIL("cannot write '{}': no free temporary file name in its directory", target.string());
}

}  // namespace

void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write) {
  const std::filesystem::path target(path);
  LORA_CHECK(target.has_filename(), "cannot write '{}': the path does not name a file", path);
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
    // Keep the permissions of the file being replaced.
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) (void)::fchmod(fd, st.st_mode & 07777);
    // The data must be on disk before the rename makes it visible: otherwise a crash could leave a
    // renamed but empty file in place of the old one.
    LORA_CHECK(::fsync(fd) == 0, "cannot write '{}': fsync of '{}' failed: {}", path, tmp, errno_text(errno));
    const int closed = ::close(fd);
    fd = -1;
    LORA_CHECK(closed == 0, "cannot write '{}': closing '{}' failed: {}", path, tmp, errno_text(errno));
    LORA_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "cannot write '{}': renaming '{}' into place failed: {}",
               path, tmp, errno_text(errno));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  // Make the rename itself durable (best effort: some file systems refuse fsync on a directory).
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : ".";
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    (void)::fsync(dir_fd);
    ::close(dir_fd);
  }
}

}  // namespace lora
