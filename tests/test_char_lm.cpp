// tools/char_lm.h: the character vocabulary, splits, held-out loss and samples longer than the context.
#include <catch2/catch.hpp>

#include <unistd.h>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "models/registry.h"
#include "tools/char_lm.h"

using namespace lora;
using Catch::Matchers::Contains;

TEST_CASE("a character vocabulary: ids in byte order, round trips, clear refusals", "[char_lm]") {
  const tools::CharVocab v = tools::CharVocab::from_text("hello, world\n");
  CHECK(v.chars() == "\n ,dehlorw");
  CHECK(v.size() == 10);
  CHECK(v.encode("hello") == std::vector<int32_t>{5, 4, 6, 6, 7});
  CHECK(v.decode(v.encode("world, hello\n")) == "world, hello\n");
  CHECK_THROWS_WITH(v.encode("hello!!", "--data 'x.txt'"),
                    Contains("--data 'x.txt'") && Contains("2 characters") && Contains("'!' (2x)"));
  CHECK_THROWS_WITH(v.decode({10}), Contains("id 10"));
  CHECK_THROWS_WITH(tools::CharVocab::from_text(""), Contains("empty"));
}

TEST_CASE("a character vocabulary saves and loads as JSON, and bad files are refused by name", "[char_lm]") {
  const auto dir = std::filesystem::temp_directory_path() / ("char_vocab_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "char_vocab.json").string(), bad = (dir / "bad.json").string();
  const tools::CharVocab v = tools::CharVocab::from_text("To be, or not to be:\nthat is the question.");
  v.save(path);
  CHECK(tools::CharVocab::load(path).chars() == v.chars());
  for (const std::string text : {"{", "{\"type\": \"bpe\", \"chars\": \"ab\"}",
                                 "{\"type\": \"char\", \"chars\": \"aba\"}", "{\"type\": \"char\", \"chars\": \"\"}"}) {
    INFO(text);
    std::ofstream(bad) << text;
    CHECK_THROWS_WITH(tools::CharVocab::load(bad), Contains(bad));
  }
  CHECK_THROWS_WITH(tools::CharVocab::load((dir / "missing.json").string()), Contains("missing.json"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("splits, entropy, held-out loss and samples beyond the context", "[char_lm]") {
  const tools::CharSplit s = tools::split_ids({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 0.9);
  CHECK(s.train.size() == 9);
  CHECK(s.val == std::vector<int32_t>{9});
  CHECK(tools::unigram_entropy({0, 0, 1, 1}, 3) == Approx(std::log(2.0)));
  CHECK(tools::unigram_entropy({2, 2, 2}, 3) == 0.0);

  const nlohmann::json config = {{"model_type", "gpt2"}, {"vocab_size", 5}, {"n_positions", 8},
                                 {"n_embd", 16},         {"n_layer", 1},    {"n_head", 2}};
  auto model = models::create_model({config, "test"}, 3);
  std::vector<int32_t> ids;
  for (int i = 0; i < 200; ++i) ids.push_back(i % 5);
  const double a = tools::held_out_loss(*model, ids, 2, 8, 3, 1), b = tools::held_out_loss(*model, ids, 2, 8, 3, 1);
  CHECK(a == b);  // the same windows each time
  CHECK(a == Approx(std::log(5.0)).margin(0.3));
  CHECK(model->is_training());  // the mode is restored

  const tools::CharVocab vocab = tools::CharVocab::from_text("abcde");
  models::SamplingOptions o;
  o.seed = 4;
  const std::string text = tools::sample_text(*model, vocab, "ab", 30, o);  // past the context of 8
  CHECK(text.size() == 30);
  CHECK(text.find_first_not_of("abcde") == std::string::npos);
  CHECK(tools::sample_text(*model, vocab, "ab", 30, o) == text);  // seeded
  CHECK_THROWS_WITH(tools::sample_text(*model, vocab, "", 5, o), Contains("prompt"));
}
