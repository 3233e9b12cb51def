// tokenizer_for_model: --tokenizer, the model folder's tokenizer, or GPT-2's files for GPT-2.
#include "tools/model_tokenizer.h"

#include <filesystem>

#include "core/allocator.h"
#include "core/files.h"
#include "models/gguf/model_io.h"
#include "models/gguf/tokenizer.h"
#include "models/tokenizer/gpt2_tokenizer.h"

namespace lora::tools {
namespace fs = std::filesystem;

bool has_tokenizer_files(const std::string& folder) {
  const fs::path dir(folder);
  return is_regular_file((dir / "tokenizer.json").string()) ||
         (is_regular_file((dir / "vocab.json").string()) && is_regular_file((dir / "merges.txt").string())) ||
         (is_regular_file((dir / "encoder.json").string()) && is_regular_file((dir / "vocab.bpe").string()));
}

std::unique_ptr<tokenizer::Tokenizer> tokenizer_before_model(const std::string& weights,
                                                             const std::string& tokenizer_arg) {
  std::unique_ptr<tokenizer::Tokenizer> tok;
  if (!tokenizer_arg.empty()) {
    tok = tokenizer::load_tokenizer(tokenizer_arg);
  } else if (!weights.empty() && models::gguf_io::is_gguf_path(weights)) {
    tok = models::gguf_io::load_gguf_tokenizer(weights);  // the file's own vocabulary
  } else if (!weights.empty()) {
    const std::string folder = is_directory(weights) ? weights : fs::path(weights).parent_path().string();
    if (has_tokenizer_files(folder.empty() ? "." : folder)) {
      tok = tokenizer::load_tokenizer(folder.empty() ? "." : folder);
    }
  }
  memory::trim_heap();
  return tok;
}

std::unique_ptr<tokenizer::Tokenizer> tokenizer_for_model(const models::CausalLM& model, const std::string& weights,
                                                          const std::string& tokenizer_arg) {
  std::unique_ptr<tokenizer::Tokenizer> tok = tokenizer_before_model(weights, tokenizer_arg);
  if (!tok) {
    LORA_CHECK(model.model_type() == "gpt2",
               "no tokenizer for this {} model: its folder has no tokenizer.json (or vocab.json + merges.txt); give "
               "--tokenizer PATH",
               model.model_type());
    tok = tokenizer::load_tokenizer(tokenizer::GPT2Tokenizer::default_dir());
    memory::trim_heap();
  }
  return tok;
}

}  // namespace lora::tools
