// The LoRA replication: BLEU and ROUGE-L on hand-worked examples, E2E batches and their loss mask, the
// SVG plot, and replicate_lora end to end (--quick's invariants, deterministic and resumable pre-training,
// errors).
#include <catch2/catch.hpp>

#include <cmath>
#include <algorithm>
#include <fstream>
#include <sstream>

#include "tests/program_runner.h"
#include "tools/e2e_data.h"
#include "tools/replication.h"
#include "tools/svg_plot.h"
#include "tools/text_metrics.h"

using namespace lora;
using namespace lora::tools;
using namespace lora::testing;

namespace {
Tokens words(const std::string& s) {
  Tokens out;
  std::istringstream in(s);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}
std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}
}  // namespace

TEST_CASE("BLEU-4 on a hand-worked corpus: clipped counts summed over segments, closest reference length", "[metrics]") {
  // Segment 1: "a b c d e f" against "a b c d" and "c d e".
  //   1-grams 5/6 (f unmatched), 2-grams 4/5 (ef), 3-grams 3/4 (def), 4-grams 1/3 (abcd only); closest ref 4.
  // Segment 2: "a a a" against "a b": "a" clipped to 1 -> 1/3, 2-grams 0/2, 3-grams 0/1; ref 2.
  // p = 6/9, 4/7, 3/5, 1/3; c = 9 > r = 6 so BP = 1; BLEU = (6/9 * 4/7 * 3/5 * 1/3)^(1/4) = (24/315)^(1/4).
  const BleuScore s = corpus_bleu({words("a b c d e f"), words("a a a")},
                                  {{words("a b c d"), words("c d e")}, {words("a b")}});
  CHECK(s.matches == std::array<int64_t, 4>{6, 4, 3, 1});
  CHECK(s.totals == std::array<int64_t, 4>{9, 7, 5, 3});
  CHECK(s.hyp_length == 9);
  CHECK(s.ref_length == 6);
  CHECK(s.brevity_penalty == 1.0);
  CHECK(s.bleu == Approx(std::pow(24.0 / 315.0, 0.25)).epsilon(1e-12));
  CHECK(s.bleu == Approx(0.525382).epsilon(1e-5));
}

TEST_CASE("BLEU's brevity penalty uses the closest reference, the shorter one on a tie", "[metrics]") {
  // c = 2, closest r = 3: BP = exp(1 - 3/2); no 3-gram matches, so BLEU is 0 (no smoothing).
  const BleuScore short_hyp = corpus_bleu(std::vector<Tokens>{words("a b")}, {{words("a b c"), words("a b c d e")}});
  CHECK(short_hyp.ref_length == 3);
  CHECK(short_hyp.brevity_penalty == Approx(std::exp(-0.5)).epsilon(1e-12));
  CHECK(short_hyp.bleu == 0.0);
  // |5 - 4| = |5 - 6|: the shorter (4) is taken, so c > r and BP = 1 (with 6 it would be exp(-0.2)).
  const BleuScore tie = corpus_bleu(std::vector<Tokens>{words("a b c d e")}, {{words("a b c d x y"), words("a b c d")}});
  CHECK(tie.ref_length == 4);
  CHECK(tie.brevity_penalty == 1.0);
  CHECK(corpus_bleu(std::vector<Tokens>{words("a b c d e")}, {{words("a b c d e")}}).bleu == 1.0);
  // Raw strings are tokenised first (lower-cased, punctuation split).
  CHECK(corpus_bleu_text({"The cat sat, on the mat."}, {{"the cat sat , on the mat ."}}).bleu == 1.0);
}

TEST_CASE("mteval-v13a tokenisation: punctuation split, digits kept together, lower-cased", "[metrics]") {
  CHECK(bleu_tokenize("Hello, world. It costs £20-25 (approx).") ==
        Tokens{"hello", ",", "world", ".", "it", "costs", "£20", "-", "25", "(", "approx", ")", "."});
  CHECK(bleu_tokenize("3.5 and 1,000 family-friendly") == Tokens{"3.5", "and", "1,000", "family-friendly"});
  CHECK(bleu_tokenize("A&amp;B", /*keep_case=*/true) == Tokens{"A", "&", "B"});
  CHECK(rouge_tokenize("The Eagle , a pub . It is family - friendly !") ==
        Tokens{"the", "eagle", "a", "pub", "it", "is", "family", "friendly"});
}

TEST_CASE("ROUGE-L: LCS, and pycocoevalcap's F of the best precision and the best recall", "[metrics]") {
  CHECK(lcs_length(words("the cat sat on the mat"), words("the cat was on the mat")) == 5);
  CHECK(lcs_length(words("a b c"), {}) == 0);
  // One reference: P = R = 5/6, so F = 5/6.
  CHECK(rouge_l(words("the cat sat on the mat"), {words("the cat was on the mat")}) == Approx(5.0 / 6.0).epsilon(1e-12));
  // "a b c d" against "a b" (LCS 2: P 1/2, R 1) and "a x c d y z" (LCS 3: P 3/4, R 1/2):
  // P = 3/4, R = 1, F = 2.44 * 0.75 / (1 + 1.44 * 0.75) = 1.83 / 2.08 (the best single F would be 0.709).
  CHECK(rouge_l(words("a b c d"), {words("a b"), words("a x c d y z")}) == Approx(1.83 / 2.08).epsilon(1e-12));
  CHECK(rouge_l({}, {words("a b")}) == 0.0);
  // The corpus figure is the mean over segments.
  CHECK(corpus_rouge_l({"the cat sat on the mat", "dogs"}, {{"The cat was on the mat ."}, {"cats"}}) ==
        Approx(5.0 / 12.0).epsilon(1e-12));
}

TEST_CASE("E2E: lines read, references grouped by MR, loss only on the reference, right padding", "[replication]") {
  const fs::path file = scratch_dir() / "e2e.txt";
  write_file(file, "name : A | food : Thai||A serves Thai . \nname : B||B is here . \nname : A | food : Thai||Thai at A . \n");
  const auto examples = read_e2e(file.string());
  REQUIRE(examples.size() == 3);
  CHECK(examples[0].ref == "A serves Thai .");  // the trailing space is dropped
  const auto groups = group_by_mr(examples);
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].refs == std::vector<std::string>{"A serves Thai .", "Thai at A ."});
  CHECK(e2e_prompt("name : B") == "name : B ||");

  write_file(file, "name : A without separator \n");
  CHECK_THROWS_WITH(read_e2e(file.string()), Catch::Contains("e2e.txt', line 1"));

  // ids 10 11 | 12 13 (prompt of 2) and 20 | 21 (prompt of 1): inputs drop the last token, targets are the
  // next token from the prompt's end on, -100 elsewhere and on padding.
  const std::vector<LMExample> ex = {{{10, 11, 12, 13}, 2}, {{20, 21}, 1}};
  Tensor x, y;
  const std::vector<int64_t> rows = {0, 1};
  make_lm_batch(ex, rows, 99, x, y);
  CHECK(x.shape() == Shape{2, 3});
  CHECK(x.to_vector<int32_t>() == std::vector<int32_t>{10, 11, 12, 20, 99, 99});
  CHECK(y.to_vector<int32_t>() == std::vector<int32_t>{-100, 12, 13, 21, -100, -100});
  CHECK(count_targets(ex, rows) == 3);
}

TEST_CASE("pre-training windows depend on (seed, step) alone and cover every window once per epoch", "[replication]") {
  std::vector<int64_t> epoch;
  for (int64_t step = 0; step < 5; ++step) {
    const auto w = pretrain_windows(10, 2, step, 42);
    epoch.insert(epoch.end(), w.begin(), w.end());
    CHECK(w == pretrain_windows(10, 2, step, 42));
  }
  std::sort(epoch.begin(), epoch.end());
  CHECK(epoch == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(pretrain_windows(10, 10, 0, 42) != pretrain_windows(10, 10, 0, 43));
}

TEST_CASE("SVG plot: axes, one polyline per series, escaped text", "[replication]") {
  const std::string svg = line_plot_svg({{"full", {0, 50, 100}, {3.0, 2.0, 1.5}}, {"r<8>", {0, 100}, {3.0, 1.7}}},
                                        {.title = "loss", .x_label = "step", .y_label = "loss"});
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(std::count(svg.begin(), svg.end(), '\n') > 10);
  size_t polylines = 0;
  for (size_t p = 0; (p = svg.find("<polyline", p)) != std::string::npos; ++p) ++polylines;
  CHECK(polylines == 2);
  CHECK_THAT(svg, Catch::Contains("r&lt;8&gt;"));
  CHECK(nice_ticks(0, 100, 5) == std::vector<double>{0, 20, 40, 60, 80, 100});
  CHECK_THROWS(line_plot_svg({}, {}));
}

TEST_CASE("replicate_lora --quick: every invariant holds, files for every run, a rerun skips finished stages",
          "[examples][slow]") {
  REQUIRE_PROGRAM(program, "replicate_lora");
  const fs::path out = scratch_dir() / "replicate_quick";
  const RunResult r = run(program, "--quick --out " + quote(out));
  INFO(r.out.substr(r.out.size() > 4000 ? r.out.size() - 4000 : 0) << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("ETA"));
  const auto results = nlohmann::json::parse(slurp(out / "report" / "results.json"));
  for (const auto& [name, passed] : results["checks"].items()) {
    INFO(name);
    CHECK(passed.get<bool>());
  }
  CHECK(results["checks"].size() == 6);
  REQUIRE(results["runs"].size() == 7);
  const auto refs = nlohmann::json::parse(slurp(out / "report" / "references.json"));
  for (const auto& run : results["runs"]) {
    const std::string generations = slurp(out / "report" / run["generations_file"].get<std::string>());
    CHECK(std::count(generations.begin(), generations.end(), '\n') == static_cast<long>(refs.size()));
    if (run["mode"] == "lora") CHECK(run["trainable_params"].get<int64_t>() < results["runs"][0]["trainable_params"].get<int64_t>());
  }
  CHECK(fs::exists(out / "report" / "loss_curves.svg"));
  CHECK(results["merging"]["latency"]["base_a_median_s_per_token"].get<double>() > 0);

  const RunResult again = run(program, "--quick --out " + quote(out));
  CHECK(again.exit_code == 0);
  CHECK_THAT(again.out, Catch::Contains("pre-training: done"));
  CHECK_THAT(again.out, Catch::Contains("fine-tune lora_qv_r8: done"));
}

TEST_CASE("replicate_lora pre-training is deterministic and an interrupted run resumes to the same bytes",
          "[examples][slow]") {
  REQUIRE_PROGRAM(program, "replicate_lora");
  const fs::path a = scratch_dir() / "pretrain_a", b = scratch_dir() / "pretrain_b";
  REQUIRE(run(program, "--quick --pretrain-only --out " + quote(a)).exit_code == 0);
  const RunResult stopped = run(program, "--quick --pretrain-only --stop-after 12 --out " + quote(b));
  CHECK(stopped.exit_code == 3);
  CHECK_FALSE(fs::exists(b / "pretrain.json"));
  const RunResult resumed = run(program, "--quick --pretrain-only --out " + quote(b));
  REQUIRE(resumed.exit_code == 0);
  CHECK_THAT(resumed.out, Catch::Contains("resuming from"));
  const std::string weights_a = slurp(a / "pretrain" / "model" / "model.safetensors");
  CHECK(!weights_a.empty());
  CHECK(weights_a == slurp(b / "pretrain" / "model" / "model.safetensors"));
}

TEST_CASE("replicate_lora refuses bad flags and inputs, naming them", "[examples]") {
  REQUIRE_PROGRAM(program, "replicate_lora");
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"--bogus", "--bogus"},
      {"--quick --data-dir /nonexistent/data", "/nonexistent/data"},
      {"--quick --runs full,lora_qv_r3", "lora_qv_r3"},
      {"--quick --n-embd 30 --n-head 4", "--n-embd"},
      {"--quick --weights /nonexistent/gpt2", "/nonexistent/gpt2"},
      {"--quick --corpus corpus/missing.txt", "missing.txt"},
      {"--quick --corpus corpus/gutenberg-austen-persuasion.txt", "held out"},
  };
  for (const auto& [args, message] : bad) {
    INFO("replicate_lora " << args);
    const RunResult r = run(program, args + " --out " + quote(scratch_dir() / "bad"));
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.err, Catch::Contains(message));
  }
  const RunResult help = run(program, "--help");
  CHECK(help.exit_code == 0);
  for (const char* flag : {"--quick", "--weights", "--out", "--report-dir", "--runs", "--stop-after"}) {
    CHECK_THAT(help.out, Catch::Contains(flag));
  }
}
