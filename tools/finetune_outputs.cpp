// training_settings.json, the tokenizer beside the trained weights, the loss curve.
#include "tools/finetune_outputs.h"

#include <filesystem>
#include <fstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/files.h"
#include "core/json.h"
#include "models/tokenizer/gpt2_tokenizer.h"
#include "tools/model_tokenizer.h"
#include "tools/svg_plot.h"

namespace lora::tools {
namespace fs = std::filesystem;

nlohmann::json resolved_settings(const FinetuneOptions& o, const std::string& mode, int64_t steps, double lr,
                                 const FinetuneData& data, const std::string& base_model) {
  nlohmann::json s = {
      {"mode", mode},
      {"base_model", base_model},
      {"weights", o.weights},
      {"config", o.config},
      {"tokenizer", o.tokenizer},
      {"format", train::data_format_name(data.detected.format)},
      {"format_detected_because", data.detected.why},
      {"train_on_inputs", o.train_on_inputs},
      {"seq", o.seq},
      {"max_seq", o.max_seq > 0 ? o.max_seq : o.seq},
      {"drop_long", o.drop_long},
      {"packing", o.packing},
      {"batch", o.batch},
      {"grad_accum", o.grad_accum},
      {"steps", steps},
      {"epochs", o.epochs},
      {"lr", lr},
      {"warmup", o.warmup},
      {"schedule", "cosine"},
      {"grad_clip", o.grad_clip},
      {"weight_decay", o.weight_decay},
      {"seed", o.seed},
      {"eval_fraction", o.eval_fraction},
      {"eval_every", o.eval_every},
      {"early_stop_patience", o.early_stop_patience},
      {"device", o.device},
      {"checkpoint_activations", o.checkpoint_activations},
  };
  if (mode == "lora") {
    s["lora"] = {{"rank", o.rank},
                 {"alpha", o.alpha},
                 {"dropout", o.lora_dropout},
                 {"targets", o.targets},
                 {"base_dtype", o.base_dtype}};
  }
  if (data.chat_template) s["chat_template"] = data.chat_template->origin();
  if (!o.config_file.empty()) s["config_file"] = o.config_file;
  return {{"settings", s}, {"data", data.identity()}, {"hash", "sha256"}};
}

void write_training_settings(const std::string& dir, const nlohmann::json& settings) {
  write_file_atomically((fs::path(dir) / "training_settings.json").string(),
                        [&](std::ostream& out) { out << settings.dump(2) << "\n"; });
}

std::vector<std::string> copy_tokenizer_files(const std::string& dir, const FinetuneOptions& o,
                                              const models::CausalLM& model, const FinetuneData& data) {
  const auto folder_of = [](const std::string& p) {
    return p.empty() ? std::string() : is_directory(p) ? p : fs::path(p).parent_path().string();
  };
  const std::string model_folder = folder_of(o.weights);
  std::vector<std::string> candidates = {folder_of(o.tokenizer), model_folder};
  if (model.model_type() == "gpt2") candidates.push_back(tokenizer::GPT2Tokenizer::default_dir().string());
  std::string source;
  for (const std::string& c : candidates) {
    if (!c.empty() && has_tokenizer_files(c)) {
      source = c;
      break;
    }
  }
  std::vector<std::string> copied;
  const auto copy = [&](const std::string& name, const std::string& bytes) {
    write_file_atomically((fs::path(dir) / name).string(), [&](std::ostream& out) { out << bytes; });
    copied.push_back(name);
  };
  if (!source.empty()) {
    for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                             "merges.txt", "tokenizer.model", "encoder.json", "vocab.bpe"}) {
      const std::string from = (fs::path(source) / name).string();
      if (is_regular_file(from)) copy(name, read_file(from, "a tokenizer file"));
    }
  }
  if (data.chat_template) {
    copy("chat_template.jinja", data.chat_template->source());
  } else if (!model_folder.empty() && is_regular_file((fs::path(model_folder) / "chat_template.jinja").string())) {
    copy("chat_template.jinja",
         read_file((fs::path(model_folder) / "chat_template.jinja").string(), "a chat template"));
  }
  return copied;
}

std::string write_loss_curve(const std::string& log_path) {
  PlotSeries train{"training loss", {}, {}}, held_out{"held-out loss", {}, {}};
  std::ifstream in(log_path);
  LORA_CHECK(in.good(), "--log '{}': cannot read it back", log_path);
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j;
    try {
      j = parse_json(line, "--log line");
    } catch (const Error&) {
      continue;  // a line cut short by a kill
    }
    if (!j.is_object() || !j.contains("step")) continue;
    if (j.value("type", "") == "step" && j["loss"].is_number()) {
      train.x.push_back(j["step"].get<double>());
      train.y.push_back(j["loss"].get<double>());
    } else if (j.value("type", "") == "eval" && j["eval_loss"].is_number()) {
      held_out.x.push_back(j["step"].get<double>());
      held_out.y.push_back(j["eval_loss"].get<double>());
    }
  }
  std::vector<PlotSeries> series;
  for (const PlotSeries* s : {&train, &held_out}) {
    if (!s->x.empty()) series.push_back(*s);
  }
  const std::string svg_path = fs::path(log_path).replace_extension(".svg").string();
  if (series.empty()) return "";
  const std::string svg = line_plot_svg(series, {.title = "finetune: loss", .x_label = "step", .y_label = "loss"});
  write_file_atomically(svg_path, [&](std::ostream& out) { out << svg; });
  return svg_path;
}

}  // namespace lora::tools
