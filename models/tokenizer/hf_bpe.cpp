// BpeModel: reading vocab and merges from tokenizer.json, and tokenizers' merge of a piece.
#include "models/tokenizer/hf_bpe.h"

#include <algorithm>
#include <mutex>

#include "core/error.h"
#include "models/tokenizer/byte_unicode.h"
#include "models/tokenizer/hf_json.h"

namespace lora::tokenizer::hf {

namespace {

// "<0x41>" for byte 0x41, as tokenizers writes byte-fallback tokens (format!("<{b:#04X}>")).
std::string byte_token(int b) {
  return fmt::format("<0x{:02X}>", b);
}

// A vocabulary string of GPT-2's byte alphabet back to its raw bytes; false if a character is outside it.
bool vocab_to_bytes(std::string_view token, std::string& bytes) {
  bytes.clear();
  if (find_invalid_utf8(token) != std::string_view::npos) return false;
  for (size_t pos = 0; pos < token.size();) {
    const int b = unicode_to_byte(next_code_point(token, pos));
    if (b < 0) return false;
    bytes += static_cast<char>(b);
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Loading

BpeModel::BpeModel(const JsonView& model, bool byte_level) : byte_level_(byte_level) {
  model.only_fields({"type", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk",
                     "byte_fallback", "ignore_merges", "vocab", "merges"});
  if (const std::string type = model.type(); type != "BPE")
    model.field("type").unsupported("model type (only BPE; WordPiece, WordLevel and Unigram are not implemented)");
  if (const auto dropout = model.optional("dropout")) {
    if (!dropout->raw().is_number() || dropout->raw().get<double>() != 0.0)
      dropout->unsupported("BPE dropout (only null or 0: encoding must be deterministic)");
  }
  for (const char* field : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (const auto value = model.optional(field); value && !value->string().empty())
      value->unsupported("a non-empty continuing_subword_prefix or end_of_word_suffix");
  }
  auto flag = [&](const char* field) {
    const auto value = model.optional(field);
    return value && value->boolean();
  };
  fuse_unk_ = flag("fuse_unk");
  byte_fallback_ = flag("byte_fallback");
  ignore_merges_ = flag("ignore_merges");

  // vocab: {"token": id, ...} with ids 0..n-1, each once.
  const JsonView vocab = model.field("vocab");
  if (!vocab.raw().is_object()) vocab.fail("expected a JSON object {\"token\": id, ...}");
  const size_t n = vocab.raw().size();
  if (n == 0) vocab.fail("expected a non-empty vocabulary");
  if (n > size_t{1} << 30) vocab.unsupported("a vocabulary of more than 2^30 tokens");
  tokens_.resize(n);
  std::vector<bool> seen(n, false);
  ids_.reserve(n);
  for (const auto& [token, value] : vocab.raw().items()) {
    const JsonView entry(value, vocab.path() + "[" + nlohmann::json(token).dump() + "]", model.file());
    const int64_t id = entry.integer(0, static_cast<int64_t>(n) - 1);
    if (seen[static_cast<size_t>(id)])
      entry.fail(fmt::format("id {} is used twice, also by \"{}\" (ids must be 0..{}, each once)", id,
                             tokens_[static_cast<size_t>(id)], n - 1));
    seen[static_cast<size_t>(id)] = true;
    tokens_[static_cast<size_t>(id)] = token;
    ids_.emplace(token, static_cast<int32_t>(id));
  }

  first_char_.resize(n);
  last_char_.resize(n);
  for (size_t id = 0; id < n && can_cut_; ++id) {
    const std::string& t = tokens_[id];
    if (t.empty()) {
      can_cut_ = false;  // an empty token could join any two symbols: never cut
      break;
    }
    size_t pos = 0;
    char32_t prev = next_code_point(t, pos);  // the JSON parser checked that the text is UTF-8
    first_char_[id] = prev;
    while (pos < t.size()) {
      const char32_t c = next_code_point(t, pos);
      adjacent_chars_.insert(static_cast<int32_t>(prev), static_cast<int32_t>(c), {0, 0});
      prev = c;
    }
    last_char_[id] = prev;
  }
  bmp_ids_.assign(0x10000, -1);
  for (size_t id = 0; id < n; ++id) {
    size_t pos = 0;
    const std::string& t = tokens_[id];
    if (t.empty()) continue;
    const char32_t c = next_code_point(t, pos);
    if (pos == t.size() && c < 0x10000) bmp_ids_[c] = static_cast<int32_t>(id);
  }

  if (const auto unk = model.optional("unk_token")) {
    const auto id = find(unk->string());
    if (!id) unk->fail("unk_token is not in model.vocab");
    unk_id_ = *id;
  }
  for (int b = 0; b < 256; ++b) {
    const auto id = find(byte_token(b));
    fallback_ids_[static_cast<size_t>(b)] = id ? *id : -1;
  }
  if (byte_level_) {
    std::string bytes;
    for (int b = 0; b < 256; ++b) {
      append_utf8(byte_chars_[static_cast<size_t>(b)], byte_to_unicode(static_cast<uint8_t>(b)));
      const auto id = find(byte_chars_[static_cast<size_t>(b)]);
      byte_ids_[static_cast<size_t>(b)] = id ? *id : -1;
    }
    if (ignore_merges_) {
      for (size_t id = 0; id < n; ++id)
        if (vocab_to_bytes(tokens_[id], bytes)) raw_ids_.emplace(bytes, static_cast<int32_t>(id));
    }
  }

  // merges: ["a b", ...] (older files; lines starting with "#version" are skipped) or [["a", "b"], ...].
  const JsonView merges = model.field("merges");
  const size_t count = merges.size();
  bool as_strings = false, as_pairs = false;
  int32_t rank = 0;
  std::string left, right;
  for (size_t i = 0; i < count; ++i) {
    const JsonView merge = merges[i];
    if (merge.raw().is_string()) {
      as_strings = true;
      const std::string line = merge.string();
      if (line.starts_with("#version")) continue;
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        merge.fail("expected two tokens separated by one space");
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else if (merge.raw().is_array()) {
      as_pairs = true;
      if (merge.size() != 2) merge.fail("expected a pair [\"left\", \"right\"]");
      left = merge[0].string();
      right = merge[1].string();
    } else {
      merge.fail("expected \"left right\" or [\"left\", \"right\"]");
    }
    if (as_strings && as_pairs) merge.fail("merges mix \"left right\" strings and [left, right] pairs");
    const auto left_id = find(left), right_id = find(right), result_id = find(left + right);
    if (!left_id) merge.fail(fmt::format("token \"{}\" is not in model.vocab", left));
    if (!right_id) merge.fail(fmt::format("token \"{}\" is not in model.vocab", right));
    if (!result_id) merge.fail(fmt::format("the merged token \"{}\" is not in model.vocab", left + right));
    if (!merges_.insert(*left_id, *right_id, {rank, *result_id}))
      merge.fail(fmt::format("the pair is already merged at rank {}", merges_.find(*left_id, *right_id)->rank));
    ++rank;
  }
}

std::optional<int32_t> BpeModel::find(std::string_view token) const {
  const auto it = ids_.find(token);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

// ---------------------------------------------------------------------------------------------------
// Tokenize

void BpeModel::tokenize(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (ignore_merges_) {
    const StringMap& whole = byte_level_ ? raw_ids_ : ids_;
    if (const auto it = whole.find(piece); it != whole.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (byte_level_ && piece.size() == 1 && byte_ids_[static_cast<uint8_t>(piece[0])] >= 0) {
    out.push_back(byte_ids_[static_cast<uint8_t>(piece[0])]);
    return;
  }
  if (piece.size() > kMaxCachedPieceBytes) return merge_word(piece, out);
  {
    std::shared_lock lock(cache_mutex_);
    if (const auto it = cache_.find(piece); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  merge_word(piece, out);
  std::unique_lock lock(cache_mutex_);
  if (cache_.size() >= kMaxCacheEntries) cache_.clear();  // crude but bounded; refills with what is used
  cache_.try_emplace(std::string(piece), out.begin() + static_cast<std::ptrdiff_t>(first), out.end());
}

// One character `chr` of the piece, with its vocabulary id (or -1): tokenizers' merge_word loop body.
// `unk` is the pending unknown symbol (id, bytes), written out before the next known character.
void BpeModel::add_char(std::string_view chr, int32_t id, std::vector<Symbol>& symbols,
                        std::optional<std::pair<int32_t, int32_t>>& unk) const {
  auto add = [&](int32_t token, int32_t len) {
    const auto index = static_cast<int32_t>(symbols.size());
    if (!symbols.empty()) symbols.back().next = index;
    symbols.push_back({token, index - 1, -1, len});
  };
  const auto len = static_cast<int32_t>(chr.size());
  if (id >= 0) {
    if (unk) add(unk->first, unk->second), unk.reset();
    add(id, len);
    return;
  }
  if (byte_fallback_) {
    const bool all =
        std::all_of(chr.begin(), chr.end(), [&](char b) { return fallback_ids_[static_cast<uint8_t>(b)] >= 0; });
    if (all) {
      // As in tokenizers, a pending unknown symbol is not written out first.
      for (const char b : chr) add(fallback_ids_[static_cast<uint8_t>(b)], 1);
      return;
    }
  }
  if (!unk_id_) return;  // no unk_token: the character is dropped, as tokenizers does
  if (unk && fuse_unk_) {
    unk->second += len;
  } else {
    if (unk) add(unk->first, unk->second);
    unk = std::pair<int32_t, int32_t>{*unk_id_, len};
  }
}

void BpeModel::merge_word(std::string_view piece, std::vector<int32_t>& out) const {
  LORA_CHECK(piece.size() < (size_t{1} << 31), "BPE: a single piece of {} bytes is too long", piece.size());
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  std::optional<std::pair<int32_t, int32_t>> unk;
  if (byte_level_) {
    for (const char c : piece) {
      const auto b = static_cast<uint8_t>(c);
      add_char(byte_chars_[b], byte_ids_[b], symbols, unk);
    }
  } else {
    for (size_t pos = 0; pos < piece.size();) {
      const size_t start = pos;
      const char32_t c = next_code_point(piece, pos);
      const std::string_view chr = piece.substr(start, pos - start);
      int32_t id = -1;
      if (c < 0x10000) {
        id = bmp_ids_[c];
      } else if (const auto it = ids_.find(chr); it != ids_.end()) {
        id = it->second;
      }
      add_char(chr, id, symbols, unk);
    }
  }
  if (unk) {
    const auto index = static_cast<int32_t>(symbols.size());
    if (!symbols.empty()) symbols.back().next = index;
    symbols.push_back({unk->first, index - 1, -1, unk->second});
  }

  // Long pieces (no pre-tokenizer: the whole text) are cut where no merge can cross, so that the queue
  // stays small; pieces of a word or two are merged whole.
  const auto n = static_cast<int32_t>(symbols.size());
  int32_t begin = 0;
  if (n > 64 && can_cut_) {
    for (int32_t i = 1; i < n; ++i) {
      const auto left = static_cast<size_t>(symbols[static_cast<size_t>(i - 1)].id);
      const auto right = static_cast<size_t>(symbols[static_cast<size_t>(i)].id);
      if (adjacent_chars_.find(static_cast<int32_t>(last_char_[left]), static_cast<int32_t>(first_char_[right])) ==
          nullptr) {
        merge_range(symbols, begin, i);
        begin = i;
      }
    }
  }
  merge_range(symbols, begin, n);
  for (const Symbol& s : symbols)
    if (s.len != 0) out.push_back(s.id);
}

// tokenizers' Word::merge_all on symbols[begin, end): a min-queue of (rank, position); an entry is used
// when the pair now at its position still merges to the same token (checked by result, not by the
// pair's ids or rank).
void BpeModel::merge_range(std::vector<Symbol>& symbols, int32_t begin, int32_t end) const {
  if (end - begin < 2) return;
  symbols[static_cast<size_t>(begin)].prev = -1;
  symbols[static_cast<size_t>(end - 1)].next = -1;
  struct Candidate {
    int32_t rank, pos, result;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Candidate> queue;
  auto push = [&](int32_t pos, int32_t left, int32_t right) {
    if (const MergeTable::Merge* m = merges_.find(left, right)) {
      queue.push_back({m->rank, pos, m->result});
      std::push_heap(queue.begin(), queue.end(), std::greater<>{});
    }
  };
  for (int32_t i = begin; i + 1 < end; ++i)
    push(i, symbols[static_cast<size_t>(i)].id, symbols[static_cast<size_t>(i + 1)].id);

  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), std::greater<>{});
    const Candidate top = queue.back();
    queue.pop_back();
    Symbol& current = symbols[static_cast<size_t>(top.pos)];
    if (current.len == 0 || current.next == -1) continue;
    const Symbol right = symbols[static_cast<size_t>(current.next)];
    const MergeTable::Merge* now = merges_.find(current.id, right.id);
    if (now == nullptr || now->result != top.result) continue;  // stale
    symbols[static_cast<size_t>(current.next)].len = 0;
    current.id = top.result;
    current.len += right.len;
    current.next = right.next;
    if (right.next != -1) symbols[static_cast<size_t>(right.next)].prev = top.pos;
    if (current.prev >= 0) push(current.prev, symbols[static_cast<size_t>(current.prev)].id, current.id);
    if (current.next != -1) push(top.pos, current.id, symbols[static_cast<size_t>(current.next)].id);
  }
}

size_t BpeModel::cache_size() const {
  std::shared_lock lock(cache_mutex_);
  return cache_.size();
}

void BpeModel::clear_cache() const {
  std::unique_lock lock(cache_mutex_);
  cache_.clear();
}

}  // namespace lora::tokenizer::hf
