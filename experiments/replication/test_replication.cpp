// The LoRA replication: BLEU and ROUGE-L on hand-worked examples, E2E batches and their loss mask, the
// replication's BPE against Hugging Face tokenizers, the subspace similarity, the claims' criteria, the SVG
// plots, and replicate_lora end to end (--quick's invariants, deterministic and resumable pre-training, errors).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "core/random.h"
#include "experiments/replication/e2e_data.h"
#include "experiments/replication/replication.h"
#include "experiments/replication/replication_internal.h"
#include "experiments/replication/subspace.h"
#include "experiments/replication/svg_heatmap.h"
#include "experiments/replication/text_metrics.h"
#include "lora_source_dir.h"
#include "models/tokenizer/tokenizer.h"
#include "tests/program_runner.h"
#include "tools/svg_plot.h"

using namespace lora;
using namespace lora::tools;
using namespace lora::testing;
using lora::replicate::Matrix;

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

TEST_CASE("BLEU-4 on a hand-worked corpus: clipped counts summed over segments, closest reference length",
          "[metrics]") {
  // Segment 1: "a b c d e f" against "a b c d" and "c d e".
  //   1-grams 5/6 (f unmatched), 2-grams 4/5 (ef), 3-grams 3/4 (def), 4-grams 1/3 (abcd only); closest ref 4.
  // Segment 2: "a a a" against "a b": "a" clipped to 1 -> 1/3, 2-grams 0/2, 3-grams 0/1; ref 2.
  // p = 6/9, 4/7, 3/5, 1/3; c = 9 > r = 6 so BP = 1; BLEU = (6/9 * 4/7 * 3/5 * 1/3)^(1/4) = (24/315)^(1/4).
  const BleuScore s =
      corpus_bleu({words("a b c d e f"), words("a a a")}, {{words("a b c d"), words("c d e")}, {words("a b")}});
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
  const BleuScore tie =
      corpus_bleu(std::vector<Tokens>{words("a b c d e")}, {{words("a b c d x y"), words("a b c d")}});
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
  CHECK(rouge_l(words("the cat sat on the mat"), {words("the cat was on the mat")}) ==
        Approx(5.0 / 6.0).epsilon(1e-12));
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
  write_file(
      file, "name : A | food : Thai||A serves Thai . \nname : B||B is here . \nname : A | food : Thai||Thai at A . \n");
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

TEST_CASE("the replication's BPE encodes as Hugging Face tokenizers does", "[replication][tokenizer]") {
  // fixtures/bpe_vectors.jsonl: made by make_bpe_vectors.py with tokenizers 0.23.3 from
  // data/replication/tokenizer.json.
  const auto tok = tokenizer::load_tokenizer(fs::path(LORA_SOURCE_DIR) / "data/replication/tokenizer.json");
  REQUIRE(tok->vocab_size() == 4096);
  CHECK(tok->token_to_id("<|endoftext|>") == 0);
  std::ifstream in(fs::path(LORA_SOURCE_DIR) / "experiments/replication/fixtures/bpe_vectors.jsonl");
  int vectors = 0;
  for (std::string line; std::getline(in, line); ++vectors) {
    const auto v = nlohmann::json::parse(line);
    const std::string text = v["text"].get<std::string>();
    INFO(text);
    CHECK(tok->encode(text, {.parse_special_tokens = true}) == v["ids"].get<std::vector<int32_t>>());
    CHECK(tok->encode(text, {.parse_special_tokens = false}) == v["ids_plain"].get<std::vector<int32_t>>());
    CHECK(tok->decode(v["ids_plain"].get<std::vector<int32_t>>(), {}) == text);
  }
  CHECK(vectors == 47);
}

namespace {
Matrix matrix(int64_t rows, int64_t cols, std::vector<double> v) {
  return Matrix{rows, cols, std::move(v)};
}
}  // namespace

TEST_CASE("subspace similarity: hand-worked cases, invariants, and the eigensolver under it", "[replication]") {
  // A symmetric 3 x 3 with eigenvalues 4, 2, 1 (diag(2, 4, 1) rotated in its first two coordinates).
  const double c = std::cos(0.3), s = std::sin(0.3);
  Matrix q = matrix(3, 3, {c, -s, 0, s, c, 0, 0, 0, 1}), sym = matrix(3, 3, std::vector<double>(9, 0.0));
  const double diag[3] = {2, 4, 1};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 3; ++k) sym.at(i, j) += q.at(i, k) * diag[k] * q.at(j, k);
  std::vector<double> values;
  Matrix vectors;
  replicate::symmetric_eigen(sym, values, vectors);
  CHECK(values[0] == Approx(4).epsilon(1e-12));
  CHECK(values[1] == Approx(2).epsilon(1e-12));
  CHECK(values[2] == Approx(1).epsilon(1e-12));
  CHECK(std::abs(vectors.at(0, 0) * -s + vectors.at(1, 0) * c) == Approx(1).epsilon(1e-12));  // q's 2nd column

  // Directions ordered by singular value: e1 (sigma 3) before e2 (sigma 1), or the other way round.
  const Matrix e1 = matrix(1, 4, {1, 0, 0, 0});
  const Matrix e1_first = matrix(2, 4, {3, 0, 0, 0, 0, 1, 0, 0}), e2_first = matrix(2, 4, {0, 3, 0, 0, 1, 0, 0, 0});
  Matrix phi = replicate::subspace_similarity(e1, e1_first);
  CHECK(phi.at(0, 0) == Approx(1).epsilon(1e-12));
  CHECK(phi.at(0, 1) == Approx(1).epsilon(1e-12));
  phi = replicate::subspace_similarity(e1, e2_first);
  CHECK(phi.at(0, 0) == Approx(0).margin(1e-12));
  CHECK(phi.at(0, 1) == Approx(1).epsilon(1e-12));  // e1 is in span(e2, e1)
  // 45 degrees: (e1 + e2) / sqrt 2 against e1 is cos^2 = 1/2.
  CHECK(replicate::subspace_similarity(matrix(1, 4, {1, 1, 0, 0}), e1).at(0, 0) == Approx(0.5).epsilon(1e-12));

  // The same span, whatever the basis: phi(r, r) = 1; with itself, every phi(i, i) = 1.
  Generator gen(7);
  Matrix a = matrix(3, 10, std::vector<double>(30));
  for (double& v : a.v) v = gen.normal();
  Matrix mixed = matrix(3, 10, std::vector<double>(30, 0.0));
  const double m[9] = {1, 2, 0, 0, 1, -1, 3, 0, 1};
  for (int i = 0; i < 3; ++i)
    for (int k = 0; k < 3; ++k)
      for (int j = 0; j < 10; ++j) mixed.at(i, j) += m[i * 3 + k] * a.at(k, j);
  CHECK(replicate::subspace_similarity(a, mixed).at(2, 2) == Approx(1).epsilon(1e-10));
  phi = replicate::subspace_similarity(a, a);
  for (int i = 0; i < 3; ++i) CHECK(phi.at(i, i) == Approx(1).epsilon(1e-10));
  for (double v : phi.v) CHECK((v >= -1e-12 && v <= 1 + 1e-12));
  // A rank-deficient A has no defined direction: refused, not a NaN.
  CHECK_THROWS_WITH(replicate::subspace_similarity(matrix(2, 4, {1, 0, 0, 0, 2, 0, 0, 0}), e1),
                    Catch::Contains("rank"));
}

TEST_CASE("the claims' criteria: met and missed at their thresholds", "[replication]") {
  using nlohmann::json;
  auto run = [](const std::string& name, const std::string& targets, int64_t rank, double loss, double bleu,
                int64_t bytes) {
    return json{{"name", name},         {"mode", rank ? "lora" : "full"},
                {"targets", targets},   {"rank", rank},
                {"heldout_loss", loss}, {"eval", {{"bleu", bleu}}},
                {"saved_bytes", bytes}, {"memory", {{"global_peak_bytes", rank ? 100 : 200}}}};
  };
  const json base = {{"heldout_loss", 5.0}, {"corpus_heldout_loss", 4.0}};
  // Full drops 2.0; r = 8 drops 1.82 (91%), BLEU 0.45 vs 0.5 (90%); r = 1 drops 1.73 (95.05% of r = 8's).
  json runs = json::array({run("full", "", 0, 3.0, 0.5, 4000000), run("lora_qv_r8", "q,v", 8, 3.18, 0.45, 4000),
                           run("lora_qv_r1", "q,v", 1, 3.27, 0.40, 1000)});
  json claims = replicate::evaluate_claims(base, runs, json(), json(), json());
  CHECK(claims["1_lora_matches_full"]["met"] == true);
  CHECK(claims["2_small_rank_suffices"]["met"] == true);
  CHECK(claims["3_faster_less_memory"]["met"].is_null());  // no quiet-machine step time: not measured
  CHECK(claims.size() == 6);
  CHECK(claims["5_switching"]["met"].is_null());
  CHECK(claims["4_small_task_file"]["met"] == true);  // exactly 1,000 x
  runs[1]["heldout_loss"] = 3.21;                     // 89.5% of full's drop
  runs[1]["saved_bytes"] = 4001;
  claims = replicate::evaluate_claims(base, runs, json(), json(), json());
  CHECK(claims["1_lora_matches_full"]["met"] == false);
  CHECK(claims["4_small_task_file"]["met"] == false);
  CHECK_THAT(claims["1_lora_matches_full"]["figure"].get<std::string>(), Catch::Contains("89.5%"));
  runs[1]["heldout_loss"] = 3.0, runs[1]["eval"]["bleu"] = 0.44;  // all of the drop, but BLEU at 88%
  CHECK(replicate::evaluate_claims(base, runs, json(), json(), json())["1_lora_matches_full"]["met"] == false);
  const json timing = {
      {"variants",
       {{"full", {{"median_s", 1.0}, {"vs_full", 1.0}}}, {"lora_qv_r8", {{"median_s", 0.7}, {"vs_full", 0.7}}}}},
      {"load_average_before", "0.90"},
      {"load_average_after", "1.10"}};
  CHECK(replicate::evaluate_claims(base, runs, json(), json(), timing)["3_faster_less_memory"]["met"] == true);
}

TEST_CASE("the sweep's choice: the lowest validation loss, diverged runs skipped, none when all diverged",
          "[replication]") {
  replicate::Options o;
  o.out = (scratch_dir() / "choose").string();
  o.lora_lrs = {1e-3, 2e-3, 4e-3};
  const replicate::RunSpec spec{"lora_qv_r8", true, "q,v", 8};
  auto write_run = [&](double lr, nlohmann::json loss) {
    write_json_atomically(replicate::sweep_dir(o, spec.name, lr) / "train.json", {{"lr", lr}, {"heldout_loss", loss}});
  };
  write_run(1e-3, 3.2);
  write_run(2e-3, 3.1);
  CHECK(replicate::stage_choose(o, spec) == 0);
  CHECK_FALSE(fs::exists(replicate::run_dir(o, spec.name) / "chosen.json"));  // the sweep is not finished
  write_run(4e-3, nullptr);                                                   // diverged
  replicate::stage_choose(o, spec);
  CHECK(replicate::chosen_dir(o, spec.name) == replicate::sweep_dir(o, spec.name, 2e-3));
  const auto chosen = nlohmann::json::parse(slurp(replicate::run_dir(o, spec.name) / "chosen.json"));
  CHECK(chosen["lr"].get<double>() == 2e-3);
  CHECK(chosen["at_edge_of_sweep"] == false);
  CHECK(chosen["sweep"].size() == 3);

  fs::remove_all(o.out);
  for (double lr : o.lora_lrs) write_run(lr, nullptr);
  replicate::stage_choose(o, spec);
  CHECK(replicate::chosen_dir(o, spec.name).empty());
}

TEST_CASE("the sweep follows an edge that holds the best run until the loss turns or the extensions run out",
          "[replication]") {
  replicate::Options o;
  o.out = (scratch_dir() / "extend").string();
  o.lora_lrs = {5e-4, 1e-3, 2e-3};
  o.sweep_extensions = 3;
  const replicate::RunSpec spec{"lora_qv_r8", true, "q,v", 8};
  auto write_run = [&](double lr, nlohmann::json loss) {
    write_json_atomically(replicate::sweep_dir(o, spec.name, lr) / "train.json", {{"lr", lr}, {"heldout_loss", loss}});
  };
  using lrs = std::vector<double>;
  CHECK(replicate::sweep_lrs(o, spec) == lrs{5e-4, 1e-3, 2e-3});  // nothing has run
  write_run(5e-4, 3.0);
  write_run(1e-3, 2.6);
  CHECK(replicate::sweep_lrs(o, spec) == lrs{5e-4, 1e-3, 2e-3});  // 2e-3 has not run: no decision yet
  write_run(2e-3, 2.2);
  CHECK(replicate::sweep_lrs(o, spec) == lrs{5e-4, 1e-3, 2e-3, 4e-3});  // best at the top: one doubling
  write_run(4e-3, 2.0);
  CHECK(replicate::sweep_lrs(o, spec) == lrs{5e-4, 1e-3, 2e-3, 4e-3, 8e-3});
  replicate::stage_choose(o, spec);  // the sweep is not finished: nothing chosen yet
  CHECK(replicate::chosen_dir(o, spec.name).empty());
  write_run(8e-3, nullptr);  // diverged: 4e-3 is now inside the sweep, which stops growing
  CHECK(replicate::sweep_lrs(o, spec) == lrs{5e-4, 1e-3, 2e-3, 4e-3, 8e-3});
  replicate::stage_choose(o, spec);
  CHECK(replicate::chosen_dir(o, spec.name) == replicate::sweep_dir(o, spec.name, 4e-3));
  auto chosen = nlohmann::json::parse(slurp(replicate::run_dir(o, spec.name) / "chosen.json"));
  CHECK(chosen["at_edge_of_sweep"] == false);
  CHECK(chosen["sweep"].size() == 5);

  // A choice made on a shorter sweep is made again once the sweep grows (here: more extensions allowed).
  fs::remove_all(o.out);
  o.sweep_extensions = 0;
  for (double lr : o.lora_lrs) write_run(lr, 3.0 - lr * 100);  // best at the top
  replicate::stage_choose(o, spec);
  CHECK(replicate::chosen_dir(o, spec.name) == replicate::sweep_dir(o, spec.name, 2e-3));
  CHECK(nlohmann::json::parse(slurp(replicate::run_dir(o, spec.name) / "chosen.json"))["at_edge_of_sweep"] == true);
  o.sweep_extensions = 1;
  write_run(4e-3, 2.5);  // better than 2e-3's 2.8
  replicate::stage_choose(o, spec);
  chosen = nlohmann::json::parse(slurp(replicate::run_dir(o, spec.name) / "chosen.json"));
  CHECK(chosen["sweep"].size() == 4);
  CHECK(chosen["lr"].get<double>() == 4e-3);

  // The bottom edge is followed downward; the extensions are a limit.
  fs::remove_all(o.out);
  o.sweep_extensions = 2;
  write_run(5e-4, 2.0), write_run(1e-3, 2.5), write_run(2e-3, 3.0);
  CHECK(replicate::sweep_lrs(o, spec) == lrs{5e-4, 1e-3, 2e-3, 2.5e-4});
  write_run(2.5e-4, 1.9);
  CHECK(replicate::sweep_lrs(o, spec) == lrs{5e-4, 1e-3, 2e-3, 2.5e-4, 1.25e-4});
  write_run(1.25e-4, 1.8);
  CHECK(replicate::sweep_lrs(o, spec).size() == 5);  // two added: the limit, although the best is still at the edge
}

TEST_CASE("SVG heatmap: one cell per value, labels escaped, bad panels refused", "[replication]") {
  const std::string svg = replicate::heatmap_svg({{"q <last>", {{0.0, 0.5, 1.0}, {1.0, 0.25, 0.0}}}, {"v", {{0.3}}}},
                                                 {.title = "phi", .x_label = "j", .y_label = "i"});
  CHECK(svg.rfind("<svg", 0) == 0);
  size_t cells = 0;
  for (size_t p = 0; (p = svg.find("<title>i=", p)) != std::string::npos; ++p) ++cells;
  CHECK(cells == 7);
  CHECK_THAT(svg, Catch::Contains("q &lt;last&gt;"));
  CHECK_THAT(svg, Catch::Contains("fill=\"#ffffff\""));  // 0: white
  CHECK_THAT(svg, Catch::Contains("fill=\"#08306b\""));  // 1: dark blue
  CHECK_THROWS(replicate::heatmap_svg({}, {}));
  CHECK_THROWS(replicate::heatmap_svg({{"ragged", {{0.1, 0.2}, {0.3}}}}, {}));
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
  // The base before fine-tuning, the fairness check, every claim, and a sweep of two learning rates per run,
  // plus one more (--quick allows one extension) wherever the better of the two was at the edge: always
  // here, since one of two is always at an edge.
  CHECK(results["base"]["heldout_loss"].get<double>() > 0);
  CHECK(results["base"]["corpus_heldout_loss"].get<double>() > 0);
  CHECK(results["fairness"]["ratio"].get<double>() > 0);
  CHECK(results["claims"].size() == 6);
  CHECK(results["sweep"].size() == 21);
  CHECK(results["subspace"]["layers"].size() == 4);  // 2 layers x (q, v)
  const auto refs = nlohmann::json::parse(slurp(out / "report" / "references.json"));
  for (const auto& run : results["runs"]) {
    const std::string generations = slurp(out / "report" / run["generations_file"].get<std::string>());
    CHECK(std::count(generations.begin(), generations.end(), '\n') == static_cast<long>(refs.size()));
    if (run["mode"] == "lora")
      CHECK(run["trainable_params"].get<int64_t>() < results["runs"][0]["trainable_params"].get<int64_t>());
    CHECK(run["heldout_loss"] == run["curve"].back()[1]);
    double best = 1e9;  // the chosen run has the sweep's lowest validation loss
    for (const auto& s : results["sweep"]) {
      if (s["name"] == run["name"] && !s["heldout_loss"].is_null())
        best = std::min(best, s["heldout_loss"].get<double>());
    }
    CHECK(run["heldout_loss"].get<double>() == best);
  }
  for (const char* plot : {"loss_curves.svg", "rank_sweep.svg", "subspace_similarity.svg"})
    CHECK(fs::exists(out / "report" / plot));
  CHECK(results["merging"]["latency"]["base_a_median_s_per_token"].get<double>() > 0);

  const RunResult again = run(program, "--quick --out " + quote(out));
  CHECK(again.exit_code == 0);
  CHECK_THAT(again.out, Catch::Contains("pre-training: done"));
  CHECK_THAT(again.out, Catch::Contains("fine-tune lora_qv_r8 lr 1.0e-03: done"));

  // The step-time measurement alone, and the report from what is there.
  const RunResult timing = run(program, "--quick --step-timing --out " + quote(out));
  CHECK(timing.exit_code == 0);
  const auto timed = nlohmann::json::parse(slurp(out / "report" / "results.json"));
  CHECK(timed["step_timing"]["variants"]["full"]["median_s"].get<double>() > 0);
  CHECK_FALSE(timed["claims"]["3_faster_less_memory"]["met"].is_null());
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
  // E2E's validation loss beside the corpus's at every evaluation (measured, never trained on).
  const auto log = nlohmann::json::parse(slurp(a / "pretrain.json"));
  REQUIRE(log["e2e_validation_evals"].size() == log["evals"].size());
  CHECK(log["e2e_validation_evals"][0][0] == log["evals"][0][0]);
  CHECK(log["e2e_validation_evals"][0][1].get<double>() > 0);
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
      {"--quick --corpus e2e/train.txt", "E2E"},
      {"--quick --tokenizer /nonexistent/tokenizer.json", "/nonexistent/tokenizer.json"},
      {"--quick --full-lrs 0.001,2", "--full-lrs"},
      {"--quick --device tpu", "tpu"},
      {"--quick --device meta", "--device meta"},
      {"--quick --sweep-extensions -1", "--sweep-extensions"},
      {"--quick --sweep-extensions 17", "--sweep-extensions"},
      {"--quick --sweep-extensions two", "--sweep-extensions"},
  };
  for (const auto& [args, message] : bad) {
    INFO("replicate_lora " << args);
    const RunResult r = run(program, args + " --out " + quote(scratch_dir() / "bad"));
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.err, Catch::Contains(message));
  }
  const RunResult help = run(program, "--help");
  CHECK(help.exit_code == 0);
  for (const char* flag : {"--quick", "--weights", "--out", "--report-dir", "--runs", "--stop-after", "--lora-lrs",
                           "--full-lrs", "--lora-alpha", "--step-timing", "--device", "--tokenizer",
                           "--sweep-extensions"}) {
    CHECK_THAT(help.out, Catch::Contains(flag));
  }
}
