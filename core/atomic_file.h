// write_file_atomically: write a file through a temporary in the same directory, fsync it, rename it into place.
#pragma once

#include <functional>
#include <ostream>
#include <string>

namespace lora {

// Calls `write` with a binary stream onto a new temporary file next to `path` (".<name>.tmp.<pid>.<n>"),
// fsyncs it and renames it over `path`, so readers see either the old file or the complete new one, never
// a torn write. A file being replaced keeps its permission bits; a new one gets 0666 minus the umask.
// If `write` throws, the stream fails (disk full, ...) or any step fails, the temporary is removed, the
// original file is untouched, and the exception propagates (I/O failures as lora::Error naming the path).
// A process killed mid-write can leave the hidden temporary behind; it is never mistaken for `path`.
void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write);

}  // namespace lora
