// Atomic writes: a file through a temporary in the same directory (fsync, rename into place), and a folder
// of files as one commit (a staging folder swapped with the old one in a single rename).
#pragma once

#include <functional>
#include <ostream>
#include <string>

namespace lora {

// Calls `write` with a binary stream onto a new temporary file next to `path` (".<name>.tmp.<pid>.<n>"),
// fsyncs it and renames it over `path`, so readers see either the old file or the complete new one, never
// a torn write. The temporary is created readable by its owner only; just before the rename it gets the
// permission bits of the file it replaces, or 0666 minus the umask for a new file.
// If `write` throws, the stream fails (disk full, ...) or any step fails, the temporary is removed, the
// original file is untouched, and the exception propagates (I/O failures as lora::Error naming the path).
// A process killed mid-write can leave the hidden temporary behind; it is never mistaken for `path`, and
// the next write next to it removes the temporaries of processes that no longer run.
void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write);

// Writes a folder as one commit. `fill(staging)` writes every file into a new hidden staging folder next
// to `dir` (".<name>.tmp.<pid>.<n>"); the staging folder is fsynced and swapped with `dir` in one atomic
// rename (renameat2 RENAME_EXCHANGE; a plain rename when `dir` does not exist yet), then the old folder is
// removed. Readers, and a process killed at any moment, see either the old folder or the new one complete,
// never a mix. Files of the old folder for which `carry_over(name)` is true and that the new folder does
// not hold are hard-linked into it first (e.g. a tokenizer kept beside a model). Staging and retired
// folders of processes that no longer run are removed. If `fill` throws, `dir` is untouched.
void write_directory_atomically(const std::string& dir, const std::function<void(const std::string& staging)>& fill,
                                const std::function<bool(const std::string& name)>& carry_over = nullptr);

}  // namespace lora
