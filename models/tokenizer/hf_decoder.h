// Decoder and PostProcessor: the tokenizer.json "decoder" and "post_processor".
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "models/tokenizer/hf_regex.h"

namespace lora::tokenizer::hf {

class JsonView;

// Nesting of Sequence components beyond this is refused (it would only be there to exhaust the stack).
constexpr int kMaxSequenceDepth = 32;

// Turns token strings back into text as tokenizers' decoders do (decode_chain, then join): ByteLevel,
// Metaspace, Replace, ByteFallback, Fuse, Strip and Sequence of them. With no decoder the tokens are
// joined with spaces, as tokenizers does.
class Decoder {
 public:
  static Decoder from_json(const JsonView& json);
  Decoder() = default;

  std::string decode(std::vector<std::string> tokens) const;

 private:
  struct Step;
  void add(const JsonView& json, int depth);
  std::vector<std::shared_ptr<const Step>> steps_;
  bool present_ = false;
};

// Adds the special tokens of tokenizers' post-processors to the ids of one sequence: TemplateProcessing
// (the "single" template), RobertaProcessing and BertProcessing ([cls] ids [sep]), ByteLevel (offsets
// only: nothing) and Sequence of them.
class PostProcessor {
 public:
  // `id_ok(id)`: whether an id names a token (template ids must).
  static PostProcessor from_json(const JsonView& json, const std::function<bool(int64_t)>& id_ok);
  PostProcessor() = default;

  void apply(std::vector<int32_t>& ids, bool add_special_tokens) const;

  // The single special token put before / after the text by the first step that adds any, if there is
  // exactly one: what a tokenizer without tokenizer_config.json calls BOS and EOS.
  std::optional<int32_t> leading_token() const;
  std::optional<int32_t> trailing_token() const;

 private:
  struct Step;
  void add(const JsonView& json, const std::function<bool(int64_t)>& id_ok, int depth);
  std::vector<std::shared_ptr<const Step>> steps_;
};

}  // namespace lora::tokenizer::hf
