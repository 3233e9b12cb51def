// What reaches train_step: llm.c token files as llm.c writes them (fixtures made by its own writer) and
// every malformed one refused by name; random windows and batches of examples (padding, the shuffle per
// epoch, shards, epochs, resumable positions); truncation and dropping of long examples; the held-out split
// of whole examples; packing's plan.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>

#include "core/files.h"
#include "tests/program_runner.h"
#include "train/example_prep.h"
#include "train/example_source.h"
#include "train/token_file.h"
#include "train/token_stream.h"
#include "train/window_source.h"

using namespace lora;
using train::Example;
using train::kIgnoreLabel;
namespace fs = std::filesystem;

namespace {

const fs::path kTokenFixtures = fs::path(LORA_TEST_DATA_DIR) / "llmc_tokens";

std::string header_bytes(int32_t magic, int32_t version, int32_t count) {
  std::vector<int32_t> header(256, 0);
  header[0] = magic, header[1] = version, header[2] = count;
  return std::string(reinterpret_cast<const char*>(header.data()), 1024);
}

// Examples of the given lengths; example i holds ids i*100 + t, labels masked for its first `prompt` tokens.
std::vector<Example> examples_of(const std::vector<int64_t>& lengths, int64_t prompt = 0) {
  std::vector<Example> out;
  for (size_t i = 0; i < lengths.size(); ++i) {
    Example e;
    for (int64_t t = 0; t < lengths[i]; ++t) {
      e.ids.push_back(int32_t(i * 100 + size_t(t)));
      e.labels.push_back(t < prompt ? kIgnoreLabel : e.ids.back());
    }
    e.line = int64_t(i) + 1;
    out.push_back(e);
  }
  return out;
}

// Which example each row of a host batch starts with (ids are example*100 + t).
std::vector<int32_t> first_examples(const train::HostBatch& b) {
  std::vector<int32_t> out;
  for (int64_t r = 0; r < b.rows; ++r) out.push_back(b.ids[size_t(r * b.seq)] / 100);
  return out;
}

}  // namespace

TEST_CASE("llm.c token files as llm.c writes them: GPT-2's uint16 and Llama 3's uint32", "[train_data]") {
  std::ifstream in(kTokenFixtures / "expected.json");
  const auto expected = nlohmann::json::parse(in);
  for (const std::string name : {"gpt2_v1.bin", "llama3_v7.bin"}) {
    INFO(name);
    const std::string path = (kTokenFixtures / name).string();
    CHECK(train::has_llmc_magic(path));
    CHECK(train::read_llmc_tokens(path) == expected[name].get<std::vector<int32_t>>());
  }
  // Written back, byte for byte what llm.c wrote.
  const fs::path dir = testing::scratch_dir() / "llmc_roundtrip";
  fs::create_directories(dir);
  train::write_llmc_tokens((dir / "a.bin").string(), expected["gpt2_v1.bin"].get<std::vector<int32_t>>());
  train::write_llmc_tokens((dir / "b.bin").string(), expected["llama3_v7.bin"].get<std::vector<int32_t>>(),
                           train::kLlmcLlama3Magic);
  CHECK(read_file((dir / "a.bin").string(), "a") == read_file((kTokenFixtures / "gpt2_v1.bin").string(), "x"));
  CHECK(read_file((dir / "b.bin").string(), "b") == read_file((kTokenFixtures / "llama3_v7.bin").string(), "y"));
  REQUIRE_THROWS_WITH(train::write_llmc_tokens((dir / "c.bin").string(), {70000}),
                      Catch::Contains("does not fit uint16"));
}

TEST_CASE("malformed llm.c token files are refused, naming the file and what is wrong", "[train_data]") {
  const fs::path dir = testing::scratch_dir() / "llmc_bad";
  fs::create_directories(dir);
  auto refused = [&](const std::string& name, const std::string& bytes, const std::string& message) {
    INFO(name);
    const std::string path = (dir / name).string();
    testing::write_file(path, bytes);
    REQUIRE_THROWS_WITH(train::read_llmc_tokens(path), Catch::Contains(path) && Catch::Contains(message));
  };
  const std::string two_u16("\x01\x00\x02\x00", 4), two_u32("\x01\x00\x00\x00\x02\x00\x00\x00", 8);
  // The "version 2" this project once invented under GPT-2's magic: llm.c never writes it.
  refused("v2.bin", header_bytes(20240520, 2, 2) + two_u32, "version 2 under magic 20240520");
  refused("v7_gpt2_magic.bin", header_bytes(20240520, 7, 2) + two_u32, "version 7 under magic 20240520");
  refused("v1_llama_magic.bin", header_bytes(20240801, 1, 2) + two_u16, "version 1 under magic 20240801");
  refused("magic.bin", header_bytes(1234, 1, 2) + two_u16, "magic 1234 is not llm.c's");
  refused("short_header.bin", header_bytes(20240520, 1, 2).substr(0, 100), "shorter than llm.c's 1024-byte header");
  refused("empty.bin", "", "shorter than llm.c's 1024-byte header");
  refused("truncated.bin", header_bytes(20240520, 1, 3) + two_u16, "announces 3 tokens of 2 bytes");
  refused("trailing.bin", header_bytes(20240801, 7, 1) + two_u32, "announces 1 tokens of 4 bytes");
  refused("negative.bin", header_bytes(20240520, 1, -5), "negative token count");
  refused("huge_id.bin", header_bytes(20240801, 7, 1) + std::string("\xff\xff\xff\xff", 4), "beyond any vocabulary");
  REQUIRE_THROWS_WITH(train::read_llmc_tokens((dir / "missing.bin").string()), Catch::Contains("no such file"));
  // A .bin without the magic is not quietly read as text.
  testing::write_file(dir / "text.bin", "just some text, not tokens");
  REQUIRE_THROWS_WITH(train::load_token_split((dir / "text.bin").string(), nullptr), Catch::Contains("is not llm.c's"));
  // Header only: zero tokens is a valid file (too short to train on, which the window source says).
  testing::write_file(dir / "zero.bin", header_bytes(20240520, 1, 0));
  CHECK(train::read_llmc_tokens((dir / "zero.bin").string()).empty());
}

TEST_CASE("random windows: inputs and targets shifted by one; shards read what one process reads", "[train_data]") {
  std::vector<int32_t> tokens(500);
  std::iota(tokens.begin(), tokens.end(), 0);
  train::WindowSource one(tokens, 4, 8, 7, "training");
  train::WindowSource rank0(tokens, 2, 8, 7, "training", {0, 2}), rank1(tokens, 2, 8, 7, "training", {1, 2});
  for (int step = 0; step < 3; ++step) {
    const train::HostBatch all = one.next_host(), a = rank0.next_host(), b = rank1.next_host();
    CHECK(all.trained_tokens == 32);
    for (size_t i = 0; i < all.ids.size(); ++i) CHECK(all.targets[i] == all.ids[i] + 1);
    std::vector<int32_t> joined = a.ids;
    joined.insert(joined.end(), b.ids.begin(), b.ids.end());
    CHECK(joined == all.ids);
  }
  CHECK(one.epoch() == Approx(3 * 4 * 8 / 500.0));
  // The state resumes the stream exactly, and refuses another kind's.
  const nlohmann::json state = one.state();
  const train::HostBatch next = one.next_host();
  train::WindowSource resumed(tokens, 4, 8, 99, "training");
  resumed.set_state(state);
  CHECK(resumed.next_host().ids == next.ids);
  REQUIRE_THROWS_WITH(resumed.set_state({{"kind", "examples"}}), Catch::Contains("not that of random windows"));
  REQUIRE_THROWS_WITH(train::WindowSource(tokens, 2, 500, 1, "held-out"), Catch::Contains("too few for windows"));
}

TEST_CASE("examples padded to the longest row: targets shifted, the last token and padding ignored", "[train_data]") {
  const std::vector<Example> examples = examples_of({3, 5, 2}, 1);
  train::ExampleSource source(examples, {.batch = 3, .shuffle = false, .pad_id = 7});
  const train::HostBatch b = source.next_host();
  REQUIRE(b.rows == 3);
  REQUIRE(b.seq == 5);
  const int32_t X = kIgnoreLabel;
  CHECK(b.ids == std::vector<int32_t>{0, 1, 2, 7, 7, /**/ 100, 101, 102, 103, 104, /**/ 200, 201, 7, 7, 7});
  CHECK(b.targets == std::vector<int32_t>{1, 2, X, X, X, /**/ 101, 102, 103, 104, X, /**/ 201, X, X, X, X});
  CHECK(b.trained_tokens == 7);
  CHECK(b.padding == 5);
  CHECK(b.sequences == 3);
  CHECK(b.segments.empty());
  CHECK(source.epoch() == Approx(1.0));
}

TEST_CASE("examples: a seeded shuffle per epoch, each example once an epoch, shards and resume", "[train_data]") {
  std::vector<int64_t> lengths;
  for (int i = 0; i < 10; ++i) lengths.push_back(2 + i % 4);
  const std::vector<Example> examples = examples_of(lengths);
  auto order_of = [](train::ExampleSource& s, int batches) {
    std::vector<int32_t> order;
    for (int i = 0; i < batches; ++i) {
      const auto firsts = first_examples(s.next_host());
      order.insert(order.end(), firsts.begin(), firsts.end());
    }
    return order;
  };
  train::ExampleSource source(examples, {.batch = 2, .seed = 5});
  const std::vector<int32_t> stream = order_of(source, 15);  // three epochs
  std::vector<std::vector<int32_t>> epochs(3);
  for (size_t i = 0; i < stream.size(); ++i) epochs[i / 10].push_back(stream[i]);
  for (auto& e : epochs) {
    std::vector<int32_t> sorted = e;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int32_t> all(10);
    std::iota(all.begin(), all.end(), 0);
    CHECK(sorted == all);  // every example once
  }
  CHECK(epochs[0] != epochs[1]);  // reshuffled
  CHECK(source.epoch() == Approx(3.0));
  // The same seed, the same stream; another seed, another.
  train::ExampleSource again(examples, {.batch = 2, .seed = 5}), other(examples, {.batch = 2, .seed = 6});
  CHECK(order_of(again, 15) == stream);
  CHECK(order_of(other, 15) != stream);
  // Two shards with batch 1 read the rows one process with batch 2 reads.
  train::ExampleSource shard0(examples, {.batch = 1, .seed = 5}, {0, 2}),
      shard1(examples, {.batch = 1, .seed = 5}, {1, 2});
  std::vector<int32_t> interleaved;
  for (int i = 0; i < 15; ++i) {
    interleaved.push_back(first_examples(shard0.next_host())[0]);
    interleaved.push_back(first_examples(shard1.next_host())[0]);
  }
  CHECK(interleaved == stream);
  // A batch that straddles two epochs (10 examples, batch 3), and a resume from the middle of an epoch.
  train::ExampleSource odd(examples, {.batch = 3, .seed = 9});
  order_of(odd, 4);  // 12 rows: the 4th batch crossed into epoch 1
  CHECK(odd.epoch() == Approx(1.2));
  const nlohmann::json state = odd.state();
  const std::vector<int32_t> rest = order_of(odd, 5);
  train::ExampleSource resumed(examples, {.batch = 3, .seed = 9});
  resumed.set_state(state);
  CHECK(order_of(resumed, 5) == rest);
  REQUIRE_THROWS_WITH(resumed.set_state({{"kind", "examples"}, {"examples", 11}, {"epoch", 0}, {"row", 0}}),
                      Catch::Contains("that of 11 examples, this data has 10"));
  REQUIRE_THROWS_WITH(resumed.set_state({{"kind", "examples"}, {"examples", 10}, {"epoch", 0}, {"row", 99}}),
                      Catch::Contains("row 99"));
}

TEST_CASE("examples longer than --max-seq are truncated and counted, or dropped; untrained ones dropped",
          "[train_data]") {
  std::vector<Example> examples = examples_of({4, 9, 6, 3});
  examples[3].labels.assign(3, kIgnoreLabel);  // nothing to train
  train::PrepareCounts counts = train::prepare_examples(examples, 5, false, "--data 'x.jsonl'");
  CHECK(counts.examples == 4);
  CHECK(counts.truncated == 2);
  CHECK(counts.tokens_cut == 4 + 1);
  CHECK(counts.dropped_untrained == 1);
  CHECK(counts.kept() == 3);
  REQUIRE(examples.size() == 3);
  CHECK(examples[1].ids.size() == 5);
  CHECK(examples[1].labels.size() == 5);
  CHECK_THAT(counts.describe(), Catch::Contains("2 truncated (5 tokens cut)") && Catch::Contains("3 kept"));

  std::vector<Example> dropping = examples_of({4, 9, 6});
  counts = train::prepare_examples(dropping, 5, true, "--data 'x.jsonl'");
  CHECK(counts.dropped_long == 2);
  CHECK(dropping.size() == 1);
  // A prompt longer than --max-seq leaves nothing to train: dropped, counted.
  std::vector<Example> long_prompt = examples_of({10, 4});
  std::fill(long_prompt[0].labels.begin(), long_prompt[0].labels.begin() + 6, kIgnoreLabel);
  counts = train::prepare_examples(long_prompt, 6, false, "--data 'x.jsonl'");
  CHECK(counts.truncated == 1);
  CHECK(counts.dropped_untrained == 1);
  CHECK(long_prompt.size() == 1);

  std::vector<Example> all_long = examples_of({9, 8});
  REQUIRE_THROWS_WITH(
      train::prepare_examples(all_long, 5, true, "--data 'x.jsonl'"),
      Catch::Contains("--data 'x.jsonl'") && Catch::Contains("every one of its 2 examples is longer than --max-seq 5"));
  std::vector<Example> masked = examples_of({4, 5}, 10);
  REQUIRE_THROWS_WITH(train::prepare_examples(masked, 50, false, "--data 'x.jsonl'"),
                      Catch::Contains("none of its 2 examples has a trained token"));
  std::vector<Example> none;
  REQUIRE_THROWS_WITH(train::prepare_examples(none, 50, false, "--data 'e.jsonl'"), Catch::Contains("no examples"));
}

TEST_CASE("an eval fraction (--eval-fraction) holds out whole examples, seeded", "[train_data]") {
  const std::vector<Example> examples = examples_of(std::vector<int64_t>(20, 4));
  std::vector<Example> a = examples, b = examples, c = examples;
  const std::vector<Example> held_a = train::split_off_examples(a, 0.25, 3);
  const std::vector<Example> held_b = train::split_off_examples(b, 0.25, 3);
  const std::vector<Example> held_c = train::split_off_examples(c, 0.25, 4);
  REQUIRE(held_a.size() == 5);
  CHECK(a.size() == 15);
  std::set<int64_t> lines;
  for (const auto& e : held_a) lines.insert(e.line);
  for (const auto& e : a) {
    CHECK(lines.count(e.line) == 0);  // each example on one side, whole
    CHECK(e.ids.size() == 4);
  }
  std::vector<int64_t> la, lb, lc;
  for (const auto& e : held_a) la.push_back(e.line);
  for (const auto& e : held_b) lb.push_back(e.line);
  for (const auto& e : held_c) lc.push_back(e.line);
  CHECK(la == lb);
  CHECK(la != lc);
  CHECK(std::is_sorted(la.begin(), la.end()));  // file order kept
  std::vector<Example> tiny = examples_of({4});
  CHECK(train::split_off_examples(tiny, 0.5, 1).empty());  // the only example stays for training
  REQUIRE_THROWS_WITH(train::split_off_examples(tiny, 1.0, 1), Catch::Contains("--eval-fraction 1"));
}

TEST_CASE("packing's plan: every example once an epoch, rows within --seq, little padding", "[train_data]") {
  // A real-length mix: lengths from a long-tailed distribution (most short, some long), as chat data is.
  Generator gen(3);
  std::vector<int64_t> lengths;
  for (int i = 0; i < 2000; ++i) {
    const double u = gen.uniform();
    lengths.push_back(std::min<int64_t>(512, 20 + int64_t(60.0 / (1.0 - 0.97 * u))));
  }
  const std::vector<Example> examples = examples_of(lengths);
  train::ExampleSource source(examples, {.batch = 4, .packing = true, .seq = 1024, .seed = 1});
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    const auto rows = source.plan(epoch);
    std::vector<int32_t> seen;
    int64_t used = 0;
    for (const auto& row : rows) {
      int64_t n = 0;
      for (int32_t i : row) n += lengths[size_t(i)], seen.push_back(i);
      CHECK(n <= 1024);
      used += n;
    }
    std::sort(seen.begin(), seen.end());
    std::vector<int32_t> all(examples.size());
    std::iota(all.begin(), all.end(), 0);
    CHECK(seen == all);
    const double waste = 1.0 - double(used) / double(rows.size() * 1024);
    INFO("padding share of packed rows: " << waste);
    CHECK(waste < 0.05);
  }
  REQUIRE_THROWS_WITH(train::ExampleSource(examples_of({30}), {.packing = true, .seq = 16}),
                      Catch::Contains("30 tokens do not fit a packed row of 16"));
}

TEST_CASE("a packed row: examples side by side, segment ids, no target across an example's end", "[train_data]") {
  const std::vector<Example> examples = examples_of({3, 4, 2});
  train::ExampleSource source(examples, {.batch = 1, .packing = true, .seq = 10, .shuffle = false});
  const train::HostBatch b = source.next_host();
  REQUIRE(b.rows == 1);
  REQUIRE(b.seq == 9);  // as long as its longest row: 3 + 4 + 2
  const int32_t X = kIgnoreLabel;
  CHECK(b.ids == std::vector<int32_t>{0, 1, 2, 100, 101, 102, 103, 200, 201});
  CHECK(b.targets == std::vector<int32_t>{1, 2, X, 101, 102, 103, X, 201, X});
  CHECK(b.segments == std::vector<int32_t>{0, 0, 0, 1, 1, 1, 1, 2, 2});
  CHECK(b.sequences == 3);
  CHECK(b.trained_tokens == 6);
  CHECK(b.padding == 0);
}
