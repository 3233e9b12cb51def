// Decoder and PostProcessor: each tokenizers component as one case, read from JSON and applied.
#include "models/tokenizer/hf_decoder.h"

#include "core/error.h"
#include "models/tokenizer/byte_unicode.h"
#include "models/tokenizer/hf_json.h"

namespace lora::tokenizer::hf {

namespace {

// tokenizers' ByteFallback reads "<0xHH>" with u8::from_str_radix(token[3..5], 16), which also takes a
// '+' sign: "<0x+A>" is byte 0x0A. Returns the byte, or -1.
int fallback_byte(std::string_view token) {
  if (token.size() != 6 || !token.starts_with("<0x") || token[5] != '>') return -1;
  auto hex = [](char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
  };
  if (token[3] == '+') return hex(token[4]);
  const int hi = hex(token[3]), lo = hex(token[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Decoder

struct Decoder::Step {
  enum class Kind { kByteLevel, kMetaspace, kReplace, kByteFallback, kFuse, kStrip } kind;
  char32_t character = 0;            // Metaspace: the replacement; Strip: the character to strip
  bool prepend = true;               // Metaspace: prepend_scheme is not "never"
  std::string content;               // Replace: the replacement
  std::shared_ptr<Pattern> pattern;  // Replace
  size_t start = 0, stop = 0;        // Strip

  void apply(std::vector<std::string>& tokens) const;
};

void Decoder::Step::apply(std::vector<std::string>& tokens) const {
  switch (kind) {
    case Kind::kByteLevel: {
      // Every token whose characters all stand for bytes becomes those bytes, any other token its own
      // UTF-8; the whole becomes one string, invalid UTF-8 replaced by U+FFFD.
      std::string bytes;
      for (const std::string& token : tokens) {
        const size_t mark = bytes.size();
        bool all = find_invalid_utf8(token) == std::string_view::npos;
        for (size_t pos = 0; all && pos < token.size();) {
          const int b = unicode_to_byte(next_code_point(token, pos));
          if (b < 0)
            all = false;
          else
            bytes += static_cast<char>(b);
        }
        if (!all) {
          bytes.resize(mark);
          bytes += token;
        }
      }
      std::string text;
      text.reserve(bytes.size());
      append_utf8_lossy(text, bytes);
      tokens.assign(1, std::move(text));
      return;
    }
    case Kind::kMetaspace:
      for (size_t i = 0; i < tokens.size(); ++i) {
        std::string out;
        const std::string& token = tokens[i];
        for (size_t pos = 0; pos < token.size();) {
          const size_t start = pos;
          if (next_code_point(token, pos) != character) {
            out.append(token, start, pos - start);
          } else if (i != 0 || !prepend) {
            out += ' ';
          }
        }
        tokens[i] = std::move(out);
      }
      return;
    case Kind::kReplace: {
      std::vector<std::pair<size_t, size_t>> matches;
      for (std::string& token : tokens) {
        matches.clear();
        pattern->find_all(token, matches);
        if (matches.empty()) continue;
        std::string out;
        size_t last = 0;
        for (const auto& [s, e] : matches) {
          out.append(token, last, s - last);
          out += content;
          last = e;
        }
        out.append(token, last);
        token = std::move(out);
      }
      return;
    }
    case Kind::kByteFallback: {
      std::vector<std::string> out;
      std::string pending;  // bytes of consecutive <0xNN> tokens
      auto flush = [&] {
        if (pending.empty()) return;
        if (find_invalid_utf8(pending) == std::string_view::npos)
          out.push_back(pending);
        else
          out.insert(out.end(), pending.size(), "\xEF\xBF\xBD");  // one U+FFFD per byte token
        pending.clear();
      };
      for (std::string& token : tokens) {
        const int b = fallback_byte(token);
        if (b >= 0) {
          pending += static_cast<char>(b);
          continue;
        }
        flush();
        out.push_back(std::move(token));
      }
      flush();
      tokens = std::move(out);
      return;
    }
    case Kind::kFuse: {
      std::string all;
      for (const std::string& token : tokens) all += token;
      tokens.assign(1, std::move(all));
      return;
    }
    case Kind::kStrip:
      for (std::string& token : tokens) {
        std::vector<size_t> starts;  // byte offset of each character
        for (size_t pos = 0; pos < token.size(); next_code_point(token, pos)) starts.push_back(pos);
        const size_t n = starts.size();
        auto char_at = [&](size_t i) {
          size_t pos = starts[i];
          return next_code_point(token, pos);
        };
        size_t start_cut = 0, stop_cut = n;
        for (size_t i = 0; i < start && i < n && char_at(i) == character; ++i) start_cut = i + 1;
        for (size_t i = 0; i < stop && i < n && char_at(n - 1 - i) == character; ++i) stop_cut = n - 1 - i;
        if (stop_cut <= start_cut) {
          token.clear();  // tokenizers would panic on these overlapping cuts; nothing is left either way
          continue;
        }
        const size_t from = starts[start_cut], to = stop_cut < n ? starts[stop_cut] : token.size();
        token = token.substr(from, to - from);
      }
      return;
  }
}

Decoder Decoder::from_json(const JsonView& json) {
  Decoder d;
  d.present_ = true;
  d.add(json, 0);
  return d;
}

void Decoder::add(const JsonView& json, int depth) {
  if (depth > kMaxSequenceDepth) json.unsupported("Sequence nested this deep");
  const std::string type = json.type();
  auto step = std::make_shared<Step>();
  if (type == "Sequence") {
    json.only_fields({"type", "decoders"});
    const JsonView list = json.field("decoders");
    for (size_t i = 0; i < list.size(); ++i) add(list[i], depth + 1);
    return;
  } else if (type == "ByteLevel") {
    json.only_fields({"type", "add_prefix_space", "trim_offsets", "use_regex"});  // none changes decoding
    step->kind = Step::Kind::kByteLevel;
  } else if (type == "Metaspace") {
    json.only_fields({"type", "replacement", "add_prefix_space", "prepend_scheme", "split", "str_rep"});
    step->kind = Step::Kind::kMetaspace;
    step->character = json.field("replacement").character();
    std::string scheme = "always";
    if (const auto s = json.optional("prepend_scheme")) {
      scheme = s->string();
      if (scheme != "first" && scheme != "never" && scheme != "always") s->fail("expected one of first, never, always");
    }
    if (const auto add_prefix = json.optional("add_prefix_space"); add_prefix && !add_prefix->boolean()) {
      if (scheme != "never") add_prefix->fail("add_prefix_space does not match prepend_scheme");
    }
    step->prepend = scheme != "never";
  } else if (type == "Replace") {
    json.only_fields({"type", "pattern", "content"});
    step->kind = Step::Kind::kReplace;
    step->pattern = std::make_shared<Pattern>(Pattern::from_json(json.field("pattern")));
    step->content = json.field("content").string();
  } else if (type == "ByteFallback") {
    json.only_fields({"type"});
    step->kind = Step::Kind::kByteFallback;
  } else if (type == "Fuse") {
    json.only_fields({"type"});
    step->kind = Step::Kind::kFuse;
  } else if (type == "Strip") {
    json.only_fields({"type", "content", "start", "stop"});
    step->kind = Step::Kind::kStrip;
    step->character = json.field("content").character();
    step->start = static_cast<size_t>(json.field("start").integer(0, 1 << 30));
    step->stop = static_cast<size_t>(json.field("stop").integer(0, 1 << 30));
  } else {
    json.field("type").unsupported(
        "decoder type (supported: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence)");
  }
  steps_.push_back(std::move(step));
}

std::string Decoder::decode(std::vector<std::string> tokens) const {
  if (!present_) {
    std::string joined;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) joined += ' ';
      joined += tokens[i];
    }
    return joined;
  }
  for (const auto& step : steps_) step->apply(tokens);
  std::string text;
  for (const std::string& t : tokens) text += t;
  return text;
}

// ---------------------------------------------------------------------------------------------------
// PostProcessor

struct PostProcessor::Step {
  // The single-sequence template as pieces: a list of ids (a special token) or the sequence itself.
  struct Piece {
    bool sequence;
    std::vector<int32_t> ids;
  };
  std::vector<Piece> pieces;  // empty for ByteLevel (nothing to add)
};

void PostProcessor::add(const JsonView& json, const std::function<bool(int64_t)>& id_ok, int depth) {
  if (depth > kMaxSequenceDepth) json.unsupported("Sequence nested this deep");
  const std::string type = json.type();
  auto step = std::make_shared<Step>();
  auto token_id = [&](const JsonView& pair) {  // ["</s>", 2]
    if (pair.size() != 2) pair.fail("expected [\"token\", id]");
    pair[0].string();
    const int64_t id = pair[1].integer(0, INT32_MAX);
    if (!id_ok(id)) pair[1].fail("the id names no token");
    return static_cast<int32_t>(id);
  };
  if (type == "Sequence") {
    json.only_fields({"type", "processors"});
    const JsonView list = json.field("processors");
    for (size_t i = 0; i < list.size(); ++i) add(list[i], id_ok, depth + 1);
    return;
  } else if (type == "ByteLevel") {
    json.only_fields({"type", "add_prefix_space", "trim_offsets", "use_regex"});  // offsets only
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    if (type == "RobertaProcessing")
      json.only_fields({"type", "sep", "cls", "trim_offsets", "add_prefix_space"});
    else
      json.only_fields({"type", "sep", "cls"});
    const int32_t cls = token_id(json.field("cls")), sep = token_id(json.field("sep"));
    step->pieces = {{false, {cls}}, {true, {}}, {false, {sep}}};
  } else if (type == "TemplateProcessing") {
    json.only_fields({"type", "single", "pair", "special_tokens"});
    const JsonView specials = json.field("special_tokens");
    if (!specials.raw().is_object()) specials.fail("expected a JSON object");
    json.field("pair").size();  // pairs are not encoded here; the field must still be a list
    const JsonView single = json.field("single");
    for (size_t i = 0; i < single.size(); ++i) {
      const JsonView piece = single[i];
      if (const auto seq = piece.optional("Sequence")) {
        piece.only_fields({"Sequence"});
        seq->only_fields({"id", "type_id"});
        seq->field("type_id").integer(0, UINT32_MAX);
        if (seq->field("id").string() != "A")
          seq->field("id").unsupported("a single-sequence template that uses a sequence other than A");
        step->pieces.push_back({true, {}});
      } else if (const auto special = piece.optional("SpecialToken")) {
        piece.only_fields({"SpecialToken"});
        special->only_fields({"id", "type_id"});
        special->field("type_id").integer(0, UINT32_MAX);
        const std::string name = special->field("id").string();
        if (!specials.raw().contains(name)) special->field("id").fail("not in special_tokens");
        const JsonView entry = specials.field(name);
        entry.only_fields({"id", "ids", "tokens"});
        const JsonView ids = entry.field("ids");
        if (ids.size() != entry.field("tokens").size()) entry.fail("ids and tokens differ in length");
        Step::Piece p{false, {}};
        for (size_t k = 0; k < ids.size(); ++k) {
          const int64_t id = ids[k].integer(0, INT32_MAX);
          if (!id_ok(id)) ids[k].fail("the id names no token");
          p.ids.push_back(static_cast<int32_t>(id));
        }
        step->pieces.push_back(std::move(p));
      } else {
        piece.fail("expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
  } else {
    json.field("type").unsupported(
        "post-processor type (supported: TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel, Sequence)");
  }
  steps_.push_back(std::move(step));
}

PostProcessor PostProcessor::from_json(const JsonView& json, const std::function<bool(int64_t)>& id_ok) {
  PostProcessor p;
  p.add(json, id_ok, 0);
  return p;
}

void PostProcessor::apply(std::vector<int32_t>& ids, bool add_special_tokens) const {
  for (const auto& step : steps_) {
    if (step->pieces.empty()) continue;
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const Step::Piece& piece : step->pieces) {
      if (piece.sequence)
        out.insert(out.end(), ids.begin(), ids.end());
      else if (add_special_tokens)
        out.insert(out.end(), piece.ids.begin(), piece.ids.end());
    }
    ids = std::move(out);
  }
}

std::optional<int32_t> PostProcessor::leading_token() const {
  for (const auto& step : steps_) {
    if (step->pieces.empty()) continue;
    const Step::Piece& first = step->pieces.front();
    if (!first.sequence && first.ids.size() == 1) return first.ids[0];
    return std::nullopt;
  }
  return std::nullopt;
}

std::optional<int32_t> PostProcessor::trailing_token() const {
  for (const auto& step : steps_) {
    if (step->pieces.empty()) continue;
    const Step::Piece& last = step->pieces.back();
    if (!last.sequence && last.ids.size() == 1 && step->pieces.size() > 1) return last.ids[0];
    return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace lora::tokenizer::hf
