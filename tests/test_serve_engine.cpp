// Continuous batching (serve/decode_engine.h): requests decoded together, joining and leaving as they come
// and go, each with its own adapter, give exactly the tokens each gives alone through models::generate;
// stop strings, cancellation and the queue's limit.
#include <catch2/catch.hpp>

#include <map>

#include "backends/kernels/decode_attention.h"
#include "models/generate.h"
#include "models/gpt2/model.h"
#include "models/tokenizer/gpt2_tokenizer.h"
#include "serve/decode_engine.h"
#include "tests/serve_checks.h"
#include "tests/test_helpers.h"

using namespace lora;

namespace {

std::vector<int32_t> random_tokens(int64_t T, int64_t V, Generator& gen) {
  std::vector<int32_t> ids(static_cast<size_t>(T));
  for (auto& id : ids) id = static_cast<int32_t>(gen.below(V));
  return ids;
}

// The tokens `model` generates for a request alone, with its adapter imported the ordinary way.
std::vector<int32_t> alone(models::CausalLM& model, const serve::Request& r, const nn::AdapterState* adapter) {
  if (adapter) nn::import_adapter(model, *adapter);
  models::SamplingOptions o;
  o.max_new_tokens = r.options.max_tokens;
  o.temperature = r.options.temperature;
  o.top_p = r.options.top_p;
  o.seed = r.options.seed;
  o.stop_at_eos = false;
  std::vector<int32_t> out = models::generate(model, r.prompt, o);
  nn::remove_lora(model);
  return out;
}

struct Collected {
  std::vector<int32_t> tokens;
  std::string text;
  serve::FinishReason finish = serve::FinishReason::None;
};

// Submits every request to `engine`, each collecting what it receives into got[its id]; returns the ids.
std::vector<int64_t> submit_collecting(serve::DecodeEngine& engine, const std::vector<serve::Request>& requests,
                                       std::map<int64_t, Collected>& got) {
  std::vector<int64_t> ids;
  for (serve::Request r : requests) {
    r.on_event = [&got](const serve::Event& e) {
      if (e.token >= 0) got[e.id].tokens.push_back(e.token);
      if (e.finish != serve::FinishReason::None) got[e.id].finish = e.finish;
    };
    ids.push_back(engine.submit(std::move(r)));
  }
  return ids;
}

// Submits every request to `engine`, steps it until it is idle, and returns what each request received.
std::vector<Collected> serve_all(serve::DecodeEngine& engine, const std::vector<serve::Request>& requests) {
  std::map<int64_t, Collected> got;
  const std::vector<int64_t> ids = submit_collecting(engine, requests, got);
  for (int steps = 0; engine.step(); ++steps) REQUIRE(steps < 200);
  std::vector<Collected> out;
  for (int64_t id : ids) out.push_back(got[id]);
  return out;
}

// GPT-2 whose embedding refuses one token id: a model error that only the prompts holding it meet.
class PoisonedGPT2 : public gpt2::GPT2LMHeadModel {
 public:
  PoisonedGPT2(const models::ModelConfig& config, int64_t poison)
      : gpt2::GPT2LMHeadModel(gpt2::GPT2Config::from_json(config.json, config.source), 3), poison_(poison) {}
  Tensor embed(const Tensor& ids, const models::TokenPositions& positions) override {
    for (int64_t id : ids.to_vector<int64_t>()) LORA_CHECK(id != poison_, "token {} is poisoned", poison_);
    return gpt2::GPT2LMHeadModel::embed(ids, positions);
  }

 private:
  int64_t poison_;
};

}  // namespace

TEST_CASE("engine: batched decode with joins and leaves gives each request's tokens alone (GPT-2, Llama)", "[serve]") {
  for (const std::string preset : {"tiny", "llama-tiny"}) {
    INFO(preset);
    const models::ModelConfig config = models::read_config_arg(preset);
    auto model = models::create_model(config, 11);
    auto reference = models::create_model(config, 11);
    const std::vector<nn::AdapterState> states =
        testing::random_adapters(*reference, {{"qv", 2, {"q", "v"}}, {"all", 4, {"all-linear"}}}, 3);
    serve::AdapterSet set(*model, 4);
    set.load("qv", states[0]);
    set.load("all", states[1]);
    // 3 slots for 7 requests of different lengths: finished ones leave, waiting ones join mid-flight.
    serve::DecodeEngine engine(*model, set, {.max_sequences = 3, .max_queue = 16, .capacity = 40});
    Generator gen(5);
    const int64_t V = model->dims().vocab_size;
    std::vector<serve::Request> requests;
    std::vector<int> adapter_of;
    std::map<int64_t, Collected> got;
    for (int i = 0; i < 7; ++i) {
      serve::Request r;
      r.prompt = random_tokens(1 + (i * 3) % 7, V, gen);
      r.adapter = i % 3 == 0 ? "" : i % 3 == 1 ? "qv" : "all";
      r.options.max_tokens = 2 + (i * 5) % 9;
      r.options.temperature = i == 4 ? 0.8 : 0.0;  // one sampled request: its own seeded generator
      r.options.top_p = i == 4 ? 0.9 : 1.0;
      r.options.seed = 100 + i;
      r.options.stop_at_eos = false;
      requests.push_back(r);
      adapter_of.push_back(i % 3 == 0 ? -1 : i % 3 - 1);
    }
    std::vector<int64_t> ids;
    auto submit = [&](int i) {
      serve::Request r = requests[static_cast<size_t>(i)];
      r.on_event = [&got](const serve::Event& e) {
        if (e.token >= 0) got[e.id].tokens.push_back(e.token);
        if (e.finish != serve::FinishReason::None) got[e.id].finish = e.finish;
      };
      ids.push_back(engine.submit(std::move(r)));
    };
    for (int i = 0; i < 5; ++i) submit(i);
    int steps = 0;
    while (engine.step()) {
      if (++steps == 3) {  // two more join while others are decoding
        submit(5);
        submit(6);
      }
      REQUIRE(steps < 200);
    }
    REQUIRE(engine.active() == 0);
    REQUIRE(engine.queued() == 0);
    for (size_t i = 0; i < requests.size(); ++i) {
      INFO("request " << i);
      const int a = adapter_of[i];
      const std::vector<int32_t> expected =
          alone(*reference, requests[i], a < 0 ? nullptr : &states[static_cast<size_t>(a)]);
      REQUIRE(got[ids[i]].tokens == expected);
      REQUIRE(got[ids[i]].finish == serve::FinishReason::Length);
    }
  }
}

TEST_CASE("engine: prompts admitted together share passes within the token budget and give the same tokens",
          "[serve]") {
  for (const std::string preset : {"tiny", "llama-tiny"}) {
    INFO(preset);
    const models::ModelConfig config = models::read_config_arg(preset);
    auto model = models::create_model(config, 11);
    const std::vector<nn::AdapterState> states =
        testing::random_adapters(*model, {{"qv", 2, {"q", "v"}}, {"all", 4, {"all-linear"}}}, 3);
    serve::AdapterSet set(*model, 4);
    set.load("qv", states[0]);
    set.load("all", states[1]);
    Generator gen(9);
    const int64_t V = model->dims().vocab_size;
    std::vector<serve::Request> requests;
    for (int64_t length : {3, 3, 3, 12, 2, 7}) {  // mixed lengths, adapters and sampling
      serve::Request r;
      r.prompt = random_tokens(length, V, gen);
      r.adapter = requests.size() % 3 == 0 ? "" : requests.size() % 3 == 1 ? "qv" : "all";
      r.options.max_tokens = 3 + static_cast<int64_t>(requests.size());
      r.options.temperature = requests.size() == 4 ? 0.8 : 0.0;
      r.options.seed = 40 + requests.size();
      r.options.stop_at_eos = false;
      requests.push_back(r);
    }
    // One prompt per pass (the reference), every prompt in one pass, and a budget of 10 padded tokens:
    // {3, 3, 3} (9), then 12 alone (over the budget), then 2 and 7 apart (2 x 7 = 14 > 10): 4 passes.
    const std::vector<std::pair<int64_t, int64_t>> budgets = {{1, 6}, {2048, 1}, {10, 4}};
    std::vector<Collected> reference;
    for (const auto& [budget, passes] : budgets) {
      INFO("prompt_pass_tokens " << budget);
      serve::DecodeEngine engine(
          *model, set, {.max_sequences = 6, .max_queue = 8, .capacity = 40, .prompt_pass_tokens = budget});
      const std::vector<Collected> got = serve_all(engine, requests);
      CHECK(engine.prompt_passes() == passes);
      if (reference.empty()) reference = got;
      for (size_t i = 0; i < got.size(); ++i) {
        INFO("request " << i);
        CHECK(got[i].tokens == reference[i].tokens);
        CHECK(got[i].tokens.size() == static_cast<size_t>(requests[i].options.max_tokens));
        CHECK(got[i].finish == serve::FinishReason::Length);
      }
    }
  }
}

TEST_CASE("engine: a failed pass of several prompts runs them one at a time; only the failing one ends", "[serve]") {
  const models::ModelConfig config = models::read_config_arg("tiny");
  const int32_t poison = 77;
  PoisonedGPT2 model(config, poison), reference(config, -1);
  serve::AdapterSet set(model, 1);
  serve::DecodeEngine engine(model, set, {.max_sequences = 4, .max_queue = 8, .capacity = 32});
  std::vector<serve::Request> requests(4);
  for (size_t i = 0; i < requests.size(); ++i) {
    requests[i].prompt = {static_cast<int32_t>(5 + i), 9, 11};
    requests[i].options.max_tokens = 4;
    requests[i].options.temperature = i == 3 ? 0.7 : 0.0;
    requests[i].options.seed = 3;
    requests[i].options.stop_at_eos = false;
  }
  requests[2].prompt[1] = poison;
  std::map<int64_t, Collected> got;
  const std::vector<int64_t> ids = submit_collecting(engine, requests, got);
  // The pass of four fails; alone, the first two run, the third fails and the fourth waits again.
  REQUIRE_THROWS_WITH(engine.step(), Catch::Contains("token 77 is poisoned"));
  CHECK(engine.prompt_passes() == 4);
  CHECK(got[ids[2]].finish == serve::FinishReason::Error);
  CHECK(engine.queued() == 1);
  CHECK(engine.active() == 2);
  while (engine.step()) {
  }
  for (size_t i : {0, 1, 3}) {
    INFO("request " << i);
    CHECK(got[ids[i]].finish == serve::FinishReason::Length);
    CHECK(got[ids[i]].tokens == alone(reference, requests[i], nullptr));  // the fourth's generator untouched
  }
}

TEST_CASE("engine: stop strings end the text before them, cancel ends a request, a full queue refuses", "[serve]") {
  const models::ModelConfig config = models::read_config_arg("tiny");
  auto model = models::create_model(config, 2);
  auto reference = models::create_model(config, 2);
  serve::AdapterSet set(*model, 1);
  const auto tokenizer = tokenizer::GPT2Tokenizer::load_default();  // ids below 94 are ASCII characters
  serve::DecodeEngine engine(*model, set, {.max_sequences = 2, .max_queue = 2, .capacity = 64}, &tokenizer);

  serve::Request r;
  r.prompt = {1, 2, 3};
  r.options.max_tokens = 20;
  r.options.temperature = 0.0;
  r.options.stop_at_eos = false;
  const std::vector<int32_t> full = alone(*reference, r, nullptr);
  const std::string full_text = tokenizer.decode(full, {});
  // A stop string of two ASCII characters from the 4th on: the text ends before its first occurrence.
  size_t at = 3;
  while (at + 2 < full_text.size() &&
         !(full_text[at] > ' ' && full_text[at] < 127 && full_text[at + 1] > ' ' && full_text[at + 1] < 127)) {
    ++at;
  }
  REQUIRE(at + 2 < full_text.size());
  const std::string stop = full_text.substr(at, 2);
  r.options.stop = {stop};
  Collected c;
  r.on_event = [&c](const serve::Event& e) {
    c.text += e.text;
    if (e.finish != serve::FinishReason::None) c.finish = e.finish;
  };
  engine.submit(r);
  while (engine.step()) {
  }
  REQUIRE(c.finish == serve::FinishReason::Stop);
  REQUIRE(c.text == full_text.substr(0, full_text.find(stop)));

  // Errors name what was wrong.
  serve::Request bad = r;
  bad.adapter = "nope";
  REQUIRE_THROWS_WITH(engine.submit(bad), Catch::Contains("no adapter named 'nope'"));
  bad = r;
  bad.prompt.assign(static_cast<size_t>(engine.capacity() + 1), 1);  // the tiny preset's context: 32 tokens
  REQUIRE(engine.capacity() == 32);
  REQUIRE_THROWS_WITH(engine.submit(bad), Catch::Contains("33 tokens") && Catch::Contains("context of 32"));
  bad = r;
  bad.prompt = {1000000};
  REQUIRE_THROWS_WITH(engine.submit(bad), Catch::Contains("outside the vocabulary"));
  bad = r;
  bad.options.max_tokens = 0;
  REQUIRE_THROWS_WITH(engine.submit(bad), Catch::Contains("max_tokens"));

  // Two wait, the third is refused; a cancelled one ends with its reason.
  Collected first, second;
  serve::Request a = r, b = r;
  a.options.stop.clear();
  b.options.stop.clear();
  a.on_event = [&first](const serve::Event& e) {
    if (e.finish != serve::FinishReason::None) first.finish = e.finish;
  };
  b.on_event = [&second](const serve::Event& e) {
    if (e.finish != serve::FinishReason::None) second.finish = e.finish;
  };
  const int64_t id_a = engine.submit(a);
  engine.submit(b);
  REQUIRE(engine.queued() == 2);
  REQUIRE_THROWS_AS(engine.submit(r), serve::QueueFull);
  engine.cancel(id_a);
  while (engine.step()) {
  }
  REQUIRE(first.finish == serve::FinishReason::Cancelled);
  REQUIRE(second.finish == serve::FinishReason::Length);
}

TEST_CASE("decode_attention: each row attends over its own sequence of the pool, as composed ops do", "[serve]") {
  // A pool of 3 sequences, 2 key/value heads for 4 query heads (grouped), 4 rows at different positions,
  // two of them in the same sequence; double precision against softmax(q k^T / sqrt(D)) v from ops.
  Generator gen(9);
  const int64_t S = 3, H = 4, H_kv = 2, capacity = 7, D = 5, B = 4;
  const Tensor k_pool = Tensor::randn({S, H_kv, capacity, D}, gen, 0.0, 1.0, DType::F64);
  const Tensor v_pool = Tensor::randn({S, H_kv, capacity, D}, gen, 0.0, 1.0, DType::F64);
  const Tensor q = Tensor::randn({B, H, D}, gen, 0.0, 1.0, DType::F64);
  const std::vector<int64_t> table = {2, 0, 0, 6, 1, 3, 0, 2};  // (slot, position) per row
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  Tensor out = Tensor::empty({B, H, D}, DType::F64);
  kernels::run<kernels::DecodeAttention>(Device::cpu(), q, k_pool, v_pool, Tensor::from_vector(table, {B, 2}), scale,
                                         out);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t slot = table[2 * b], L = table[2 * b + 1] + 1;
    for (int64_t h = 0; h < H; ++h) {
      INFO("row " << b << " head " << h);
      const int64_t kv = h / (H / H_kv);
      const Tensor keys =
          ops::slice(ops::reshape(k_pool.narrow_rows(slot, 1), {H_kv, capacity, D}).narrow_rows(kv, 1), 1, 0, L);
      const Tensor values =
          ops::slice(ops::reshape(v_pool.narrow_rows(slot, 1), {H_kv, capacity, D}).narrow_rows(kv, 1), 1, 0, L);
      const Tensor qh = ops::reshape(q.narrow_rows(b, 1), {H, D}).narrow_rows(h, 1);                        // [1, D]
      const Tensor probs = ops::softmax(ops::matmul(qh, ops::reshape(keys, {L, D}), false, true) * scale);  // [1, L]
      const Tensor expected = ops::matmul(probs, ops::reshape(values, {L, D}));                             // [1, D]
      testing::require_close(ops::reshape(out.narrow_rows(b, 1), {H, D}).narrow_rows(h, 1), expected, 1e-12, 1e-12);
    }
  }
  const Tensor bad = Tensor::from_vector(std::vector<int64_t>{2, 0, 3, 0, 1, 3, 0, 2}, {B, 2});
  REQUIRE_THROWS_WITH(kernels::run<kernels::DecodeAttention>(Device::cpu(), q, k_pool, v_pool, bad, scale, out),
                      Catch::Contains("slot 3"));
}
