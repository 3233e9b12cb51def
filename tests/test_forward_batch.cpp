// The forward seam (models/forward_batch.h, models/layer_runner.h): packed segments give what the examples
// give one by one (loss and every gradient, GPT-2's learned positions and Llama's rotary ones), attention
// over segments in float64 against finite differences, logits only where asked, a pool of cache slots at
// different lengths, and every malformed batch refused with a message that names what is wrong.
#include <catch2/catch.hpp>

#include <map>

#include "models/forward_batch.h"
#include "models/registry.h"
#include "nn/attention.h"
#include "tests/test_helpers.h"

using namespace lora;

namespace {

std::vector<int32_t> random_tokens(int64_t n, int64_t V, Generator& gen) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = static_cast<int32_t>(gen.below(V));
  return ids;
}

std::map<std::string, Tensor> gradients(models::CausalLM& model) {
  std::map<std::string, Tensor> out;
  for (auto& [name, p] : model.named_parameters()) out[name] = p.grad().defined() ? p.grad().clone() : Tensor();
  return out;
}

void zero_gradients(models::CausalLM& model) {
  for (auto& [name, p] : model.named_parameters()) p.set_grad(Tensor());
}

}  // namespace

TEST_CASE("packing: a packed batch gives the loss and gradients of its examples run one by one", "[forward][packing]") {
  for (const std::string preset : {"tiny", "llama-tiny", "gemma-tiny"}) {
    INFO(preset);
    auto model = models::create_model(models::read_config_arg(preset), 11);
    const int64_t V = model->dims().vocab_size;
    Generator gen(5);
    // Two rows of 12 tokens: examples of 5, 4 and 3 tokens, then of 7 and 5; some targets ignored.
    const std::vector<std::vector<int64_t>> lengths = {{5, 4, 3}, {7, 5}};
    const int64_t B = 2, T = 12;
    std::vector<int32_t> ids = random_tokens(B * T, V, gen), targets = random_tokens(B * T, V, gen), segments;
    for (size_t i : {2u, 9u, 17u}) targets[i] = -100;
    for (const auto& row : lengths) {
      int32_t id = 0;
      for (int64_t n : row) segments.insert(segments.end(), static_cast<size_t>(n), id++);
    }
    int64_t trained = 0;
    for (int32_t t : targets) trained += t != -100;

    // Packed: one loss over every trained token of both rows.
    zero_gradients(*model);
    const Tensor packed = model->loss(models::ForwardBatch(Tensor::from_vector(ids, {B, T})).with_segments(segments),
                                      Tensor::from_vector(targets, {B, T}));
    backward(packed);
    const std::map<std::string, Tensor> packed_grads = gradients(*model);

    // One by one: each example alone, its mean weighted by its share of the trained tokens.
    zero_gradients(*model);
    double total = 0;
    int64_t at = 0;
    for (const auto& row : lengths) {
      for (int64_t n : row) {
        const std::vector<int32_t> x(ids.begin() + at, ids.begin() + at + n),
            y(targets.begin() + at, targets.begin() + at + n);
        int64_t m = 0;
        for (int32_t t : y) m += t != -100;
        const Tensor l = model->loss(Tensor::from_vector(x, {1, n}), Tensor::from_vector(y, {1, n}));
        const double weight = static_cast<double>(m) / static_cast<double>(trained);
        total += weight * l.item();
        backward(l * weight);
        at += n;
      }
    }
    REQUIRE(packed.item() == Approx(total).epsilon(1e-5));
    for (auto& [name, grad] : gradients(*model)) {
      INFO(name);
      REQUIRE(grad.defined());
      testing::require_close(packed_grads.at(name), grad, 1e-5, 1e-6);
    }
  }
}

TEST_CASE("packing: attention over segments, float64 against finite differences", "[forward][packing]") {
  Generator gen(3);
  // Rows of 9 and of 70 tokens (past the CPU kernel's 64-row block), grouped-query and not.
  struct Case {
    Shape q;
    int64_t kv_heads;
    std::vector<int32_t> segments;  // one row's ids, repeated for each batch row but the first shifted
  };
  std::vector<int32_t> long_row;
  for (int64_t t = 0; t < 70; ++t) long_row.push_back(t < 3 ? 0 : t < 40 ? 1 : t < 41 ? 2 : 3);
  const std::vector<Case> cases = {{{2, 2, 9, 3}, 2, {0, 0, 0, 1, 1, 2, 2, 2, 2}},
                                   {{1, 4, 9, 2}, 2, {0, 1, 1, 1, 1, 1, 1, 2, 2}},
                                   {{1, 2, 70, 2}, 1, long_row}};
  for (const Case& c : cases) {
    INFO(c.q.str());
    const int64_t B = c.q[0], T = c.q[2];
    std::vector<int32_t> segments;
    for (int64_t b = 0; b < B; ++b) {
      segments.insert(segments.end(), c.segments.begin(), c.segments.end());
      if (b > 0) segments[static_cast<size_t>(b * T + 1)] = segments[static_cast<size_t>(b * T)];  // rows differ
    }
    const Tensor key_start = Tensor::from_vector(nn::segment_key_starts(segments, B, T), {B, T});
    const Shape kv{B, c.kv_heads, T, c.q[3]};
    const auto f = [&](const std::vector<Tensor>& in) {
      return ops::causal_attention(in[0], in[1], in[2], 0.0, key_start);
    };
    REQUIRE_GRADCHECK(
        f, {testing::random_input(c.q, gen), testing::random_input(kv, gen), testing::random_input(kv, gen)});

    // Each segment alone through the plain causal kernel gives the same output.
    const Tensor q = Tensor::randn(c.q, gen, 0.0, 1.0, DType::F64), k = Tensor::randn(kv, gen, 0.0, 1.0, DType::F64),
                 v = Tensor::randn(kv, gen, 0.0, 1.0, DType::F64);
    const std::vector<double> packed = ops::causal_attention(q, k, v, 0.0, key_start).to_vector<double>();
    const int64_t H = c.q[1], D = c.q[3];
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t0 = 0; t0 < T;) {
        int64_t t1 = t0;
        while (t1 < T && segments[static_cast<size_t>(b * T + t1)] == segments[static_cast<size_t>(b * T + t0)]) ++t1;
        const auto part = [&](const Tensor& x) { return ops::slice(x.narrow_rows(b, 1), 2, t0, t1); };
        const std::vector<double> alone = ops::causal_attention(part(q), part(k), part(v)).to_vector<double>();
        for (int64_t h = 0; h < H; ++h)
          for (int64_t t = t0; t < t1; ++t)
            for (int64_t d = 0; d < D; ++d) {
              REQUIRE(packed[static_cast<size_t>(((b * H + h) * T + t) * D + d)] ==
                      Approx(alone[static_cast<size_t>((h * (t1 - t0) + t - t0) * D + d)]).margin(1e-12));
            }
        t0 = t1;
      }
    }
  }
  // Dropout takes the composed route: with p -> 0 in eval it is the fused one; in training the composed
  // mask must hide other segments too (no probability mass leaks across a boundary).
  const std::vector<int32_t> seg = {0, 0, 1, 1, 1};
  const Tensor q = Tensor::randn({1, 1, 5, 4}, gen, 0.0, 1.0, DType::F64);
  nn::AttentionLayout layout;
  layout.key_start_host = nn::segment_key_starts(seg, 1, 5);
  layout.key_start = Tensor::from_vector(layout.key_start_host, {1, 5});
  const Tensor v = Tensor::from_vector(std::vector<double>{1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0},
                                       {1, 1, 5, 4});
  const std::vector<double> y = nn::causal_self_attention(q, q, v, layout, nullptr, 0.5, 7).to_vector<double>();
  for (int64_t t = 2; t < 5; ++t) REQUIRE(y[static_cast<size_t>(t * 4)] == 0.0);  // nothing from segment 0
}

TEST_CASE("segments: a segment split in two runs is refused, naming the row and position", "[forward][packing]") {
  REQUIRE(nn::segment_key_starts({0, 0, 1, 1, 2}, 1, 5) == std::vector<int32_t>{0, 0, 2, 2, 4});
  REQUIRE(nn::segment_key_starts({3, 3, 3, 7, 7, 7}, 2, 3) == std::vector<int32_t>{0, 0, 0, 0, 0, 0});
  REQUIRE_THROWS_WITH(nn::segment_key_starts({0, 0, 1, 1, 0}, 1, 5),
                      Catch::Contains("row 0 position 4") && Catch::Contains("segment 0 appears again"));
  REQUIRE_THROWS_WITH(nn::segment_key_starts({0, 1}, 1, 3), Catch::Contains("2 ids for a batch of 1 x 3"));
}

TEST_CASE("forward batch: logits only where asked are the rows of the full logits", "[forward]") {
  for (const std::string preset : {"tiny", "llama-tiny"}) {
    INFO(preset);
    auto model = models::create_model(models::read_config_arg(preset), 2);
    NoGradGuard no_grad;
    model->eval();
    Generator gen(8);
    const int64_t B = 3, T = 6, V = model->dims().vocab_size;
    const Tensor ids = Tensor::from_vector(random_tokens(B * T, V, gen), {B, T});
    const Tensor all = model->forward(ids).view({B * T, V});
    const Tensor last = model->forward(models::ForwardBatch(ids).last_logits());
    REQUIRE(last.shape() == (Shape{B, V}));
    for (int64_t b = 0; b < B; ++b)
      testing::require_close(last.narrow_rows(b, 1), all.narrow_rows(b * T + T - 1, 1), 1e-5, 1e-6);
    const Tensor given = model->forward(models::ForwardBatch(ids).logits_at({7, 0, 17}));
    REQUIRE(given.shape() == (Shape{3, V}));
    testing::require_close(given.narrow_rows(0, 1), all.narrow_rows(7, 1), 1e-5, 1e-6);
    testing::require_close(given.narrow_rows(1, 1), all.narrow_rows(0, 1), 1e-5, 1e-6);
    testing::require_close(given.narrow_rows(2, 1), all.narrow_rows(17, 1), 1e-5, 1e-6);
    REQUIRE_FALSE(model->forward(models::ForwardBatch(ids).no_logits()).defined());

    // The loss on the trained positions only is the loss over all of them with the rest ignored.
    std::vector<int32_t> targets = random_tokens(B * T, V, gen);
    for (int64_t i = 0; i < B * T; i += 2) targets[static_cast<size_t>(i)] = -100;  // half masked: gathered
    const Tensor expected = ops::cross_entropy(model->forward(ids), Tensor::from_vector(targets, {B, T}));
    REQUIRE(model->loss(ids, Tensor::from_vector(targets, {B, T})).item() == Approx(expected.item()).epsilon(1e-5));
  }
}

TEST_CASE("forward batch: rows in their own cache slots at their own lengths decode as each sequence alone",
          "[forward]") {
  for (const std::string preset : {"tiny", "llama-tiny"}) {
    INFO(preset);
    auto model = models::create_model(models::read_config_arg(preset), 4);
    NoGradGuard no_grad;
    model->eval();
    const int64_t V = model->dims().vocab_size;
    Generator gen(6);
    // Sequence a (slot 2): 5 tokens of prompt; sequence b (slot 0): 3. Then 3 tokens each in one batch
    // (each row over its own slot's keys), then 1 token each (the decode kernel), b's row first.
    const std::vector<int32_t> a = random_tokens(9, V, gen), b = random_tokens(7, V, gen);
    nn::KVCache pool = model->make_kv_cache(3, 16);
    const auto run = [&](const std::vector<int32_t>& tokens, std::vector<int64_t> slots) {
      const int64_t B = static_cast<int64_t>(slots.size()), T = static_cast<int64_t>(tokens.size()) / B;
      return model->forward(
          models::ForwardBatch(Tensor::from_vector(tokens, {B, T})).with_cache(pool, std::move(slots)));
    };
    const Tensor a_prompt = run({a.begin(), a.begin() + 5}, {2});
    const Tensor b_prompt = run({b.begin(), b.begin() + 3}, {0});
    std::vector<int32_t> chunk(b.begin() + 3, b.begin() + 6);
    chunk.insert(chunk.end(), a.begin() + 5, a.begin() + 8);
    const Tensor chunk_logits = run(chunk, {0, 2});  // [2, 3, V]
    REQUIRE(pool.length(0) == 6);
    REQUIRE(pool.length(2) == 8);
    REQUIRE(pool.length(1) == 0);
    const Tensor step = run({b[6], a[8]}, {0, 2});  // [2, 1, V]

    const Tensor full_a = model->forward(Tensor::from_vector(a, {1, 9})).view({9, V});
    const Tensor full_b = model->forward(Tensor::from_vector(b, {1, 7})).view({7, V});
    testing::require_close(a_prompt.view({5, V}), ops::slice(full_a, 0, 0, 5), 1e-4, 1e-5);
    testing::require_close(b_prompt.view({3, V}), ops::slice(full_b, 0, 0, 3), 1e-4, 1e-5);
    const Tensor rows = chunk_logits.view({6, V});
    testing::require_close(ops::slice(rows, 0, 0, 3), ops::slice(full_b, 0, 3, 6), 1e-4, 1e-5);
    testing::require_close(ops::slice(rows, 0, 3, 6), ops::slice(full_a, 0, 5, 8), 1e-4, 1e-5);
    const Tensor last = step.view({2, V});
    testing::require_close(last.narrow_rows(0, 1), full_b.narrow_rows(6, 1), 1e-4, 1e-5);
    testing::require_close(last.narrow_rows(1, 1), full_a.narrow_rows(8, 1), 1e-4, 1e-5);

    // Row starts and explicit positions say the same thing. GPT-2's learned positions follow them (rotary
    // attention depends only on the distance between positions, so a row shifted as a whole is the same).
    const Tensor ids = Tensor::from_vector(random_tokens(6, V, gen), {2, 3});
    const Tensor by_starts = model->forward(models::ForwardBatch(ids).with_starts({4, 1}));
    const Tensor by_positions = model->forward(models::ForwardBatch(ids).with_positions({4, 5, 6, 1, 2, 3}));
    testing::require_close(by_starts, by_positions, 0, 0);
    const Tensor from_zero = model->forward(ids);
    if (preset == "tiny")
      REQUIRE(by_starts.to_vector<float>() != from_zero.to_vector<float>());
    else
      testing::require_close(by_starts, from_zero, 1e-5, 1e-6);
  }
}

TEST_CASE("forward batch: prompts of different lengths, padded into one pass, give what each gives alone",
          "[forward]") {
  for (const std::string preset : {"tiny", "llama-tiny"}) {
    INFO(preset);
    auto model = models::create_model(models::read_config_arg(preset), 9);
    NoGradGuard no_grad;
    model->eval();
    const int64_t V = model->dims().vocab_size;
    Generator gen(2);
    const std::vector<int32_t> a = random_tokens(7, V, gen), b = random_tokens(5, V, gen);  // a: 5 + 2, b: 3 + 2
    nn::KVCache pool = model->make_kv_cache(3, 12);
    // Row 0: b's 3-token prompt padded to 5 (with tokens that must not matter), into slot 2; row 1: a's 5.
    std::vector<int32_t> ids = {b[0], b[1], b[2], 99 % static_cast<int32_t>(V), 7, a[0], a[1], a[2], a[3], a[4]};
    const Tensor last = model->forward(models::ForwardBatch(Tensor::from_vector(ids, {2, 5}))
                                           .with_cache(pool, {2, 0})
                                           .with_lengths({3, 5})
                                           .last_logits());  // [2, V]
    REQUIRE(pool.length(2) == 3);
    REQUIRE(pool.length(0) == 5);
    const Tensor full_a = model->forward(Tensor::from_vector(a, {1, 7})).view({7, V});
    const Tensor full_b = model->forward(Tensor::from_vector(b, {1, 5})).view({5, V});
    testing::require_close(last.narrow_rows(0, 1), full_b.narrow_rows(2, 1), 1e-4, 1e-5);
    testing::require_close(last.narrow_rows(1, 1), full_a.narrow_rows(4, 1), 1e-4, 1e-5);
    // Then two more tokens each, in one pass, as if the padding had never been there.
    const Tensor next =
        model->forward(models::ForwardBatch(Tensor::from_vector(std::vector<int32_t>{b[3], b[4], a[5], a[6]}, {2, 2}))
                           .with_cache(pool, {2, 0}));
    testing::require_close(next.view({4, V}).narrow_rows(1, 1), full_b.narrow_rows(4, 1), 1e-4, 1e-5);
    testing::require_close(next.view({4, V}).narrow_rows(3, 1), full_a.narrow_rows(6, 1), 1e-4, 1e-5);
    // Without a cache, a padded row's last real token is its last logit too.
    const Tensor uncached =
        model->forward(models::ForwardBatch(Tensor::from_vector(ids, {2, 5})).with_lengths({3, 5}).last_logits());
    testing::require_close(uncached.narrow_rows(0, 1), full_b.narrow_rows(2, 1), 1e-4, 1e-5);
  }
}

TEST_CASE("forward batch: a malformed batch is refused before anything runs, naming what is wrong", "[forward]") {
  auto model = models::create_model(models::read_config_arg("tiny"), 1);  // context 32
  NoGradGuard no_grad;
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, 2, 3, 4, 5, 6}, {2, 3});
  const auto refused = [&](const models::ForwardBatch& batch, const std::string& what) {
    REQUIRE_THROWS_WITH(model->forward(batch), Catch::Contains(what));
  };
  refused(models::ForwardBatch(Tensor::from_vector(std::vector<int32_t>{1, 2}, {2})), "[batch, time]");
  refused(models::ForwardBatch(Tensor::from_vector(std::vector<float>{1, 2}, {1, 2})), "int32 or int64");
  refused(models::ForwardBatch(ids).with_starts({0}), "1 row starts for a batch of 2 x 3");
  refused(models::ForwardBatch(ids).with_starts({0, 30}), "position 32 is outside the context length 32");
  refused(models::ForwardBatch(ids).with_positions({0, 1, 2, 0, 1}), "5 positions");
  refused(models::ForwardBatch(ids).with_starts({0, 0}).with_segments({0, 0, 0, 0, 0, 0}), "not several");
  refused(models::ForwardBatch(ids).with_segments({0, 1, 0, 0, 0, 0}), "segment 0 appears again");
  refused(models::ForwardBatch(ids).with_adapters({0, -1}), "serves no adapters");
  refused(models::ForwardBatch(ids).logits_at({6}), "position 6, outside the batch's 2 x 3 tokens");
  refused(models::ForwardBatch(ids).with_lengths({0, 3}), "row 0 has length 0, outside [1, 3]");
  refused(models::ForwardBatch(ids).with_lengths({3}), "1 row lengths");

  nn::KVCache pool = model->make_kv_cache(3, 4);
  refused(models::ForwardBatch(ids).with_cache(pool), "3 slots for a batch of 2 rows");
  refused(models::ForwardBatch(ids).with_cache(pool, {1, 1}), "slot 1 is named by two rows");
  refused(models::ForwardBatch(ids).with_cache(pool, {0, 3}), "row 1 names cache slot 3");
  refused(models::ForwardBatch(ids).with_cache(pool, {0, 1}).with_starts({0, 0}), "takes no starts");
  model->forward(models::ForwardBatch(ids).with_cache(pool, {0, 2}));
  REQUIRE(pool.length(0) == 3);
  refused(models::ForwardBatch(ids).with_cache(pool, {1, 0}),
          "3 cached + 3 new tokens exceed the cache's capacity of 4");
  REQUIRE(pool.length(1) == 0);  // a refused batch leaves every slot as it was
  REQUIRE(pool.length(0) == 3);
  auto llama = models::create_model(models::read_config_arg("llama-tiny"), 1);
  REQUIRE_THROWS_WITH(llama->forward(models::ForwardBatch(ids).with_cache(pool, {0, 1})),
                      Catch::Contains("does not fit"));
  REQUIRE_THROWS_WITH(model->loss(models::ForwardBatch(ids).last_logits(), ids), Catch::Contains("every position"));
}

TEST_CASE("packing: the meta device runs a packed batch on shapes alone", "[forward][packing]") {
  DefaultDeviceGuard meta(Device::meta());
  auto model = models::create_model(models::read_config_arg("llama-tiny"), 1);
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>(8, 1), {2, 4}, Device::meta());
  const Tensor loss = model->loss(models::ForwardBatch(ids).with_segments({0, 0, 1, 1, 0, 1, 1, 1}), ids);
  REQUIRE(loss.device() == Device::meta());
  backward(loss);
}
