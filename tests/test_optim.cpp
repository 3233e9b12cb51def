// Tests of optim/: SGD, Adam and AdamW against torch.optim (tests/fixtures/adamw_step.safetensors), lazy
// state and its memory, zero_grad, gradient clipping, LR schedules, and state save/load.
//
// Tolerance against PyTorch (float32 on both sides, same formulas): 1e-6 relative, no absolute slack.
#include <unistd.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <numbers>

#include "autograd/grad_mode.h"
#include "core/memory.h"
#include "core/safetensors.h"
#include "optim/adam.h"
#include "optim/clip.h"
#include "optim/lr_schedule.h"
#include "optim/sgd.h"
#include "tests/test_helpers.h"

using namespace lora;
using namespace lora::optim;
using Catch::Contains;
using lora::testing::require_close;

namespace {

constexpr double kRtol = 1e-6, kAtol = 0.0;

Tensor fixture(const std::string& name) {
  static const SafeTensorsFile file = SafeTensorsFile::open(LORA_TEST_DATA_DIR "/adamw_step.safetensors");
  return file.load(name);
}

Tensor trainable(const Tensor& values) {
  Tensor p = values.clone();
  p.set_requires_grad(true);
  return p;
}

// From p0, `steps` steps of `make(params)` with the fixture's gradient each time (as the fixture script does).
template <typename Make>
Tensor run_fixture(Make make, int steps) {
  Tensor p = trainable(fixture("p0"));
  std::unique_ptr<Optimizer> opt = make(std::vector<Tensor>{p});
  for (int s = 0; s < steps; ++s) {
    opt->zero_grad();
    p.set_grad(fixture("grad"));
    opt->step();
  }
  return p;
}

const AdamOptions kAdam{.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1};
const SgdOptions kSgd{.lr = 0.1, .momentum = 0.9, .dampening = 0.0, .weight_decay = 0.01, .nesterov = false};

auto make_adamw = [](std::vector<Tensor> ps) { return std::make_unique<AdamW>(std::move(ps), kAdam); };
auto make_adam = [](std::vector<Tensor> ps) { return std::make_unique<Adam>(std::move(ps), kAdam); };

// A fresh directory under the system temp directory, removed at the end of the test.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() / fmt::format("lora_optim_test_{}_{}", ::getpid(), counter++);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

int64_t live(MemoryCategory category) {
  return MemoryTracker::instance().live(category);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Against torch.optim

TEST_CASE("AdamW matches torch.optim.AdamW after 1 and 3 steps", "[optim]") {
  require_close(run_fixture(make_adamw, 1), fixture("adamw_step1"), kRtol, kAtol);
  require_close(run_fixture(make_adamw, 3), fixture("adamw_step3"), kRtol, kAtol);
}

TEST_CASE("Adam (L2 weight decay) matches torch.optim.Adam after 1 and 3 steps", "[optim]") {
  require_close(run_fixture(make_adam, 1), fixture("adam_step1"), kRtol, kAtol);
  require_close(run_fixture(make_adam, 3), fixture("adam_step3"), kRtol, kAtol);
}

TEST_CASE("SGD with momentum matches torch.optim.SGD after 3 steps", "[optim]") {
  auto make_sgd = [](std::vector<Tensor> ps) { return std::make_unique<SGD>(std::move(ps), kSgd); };
  require_close(run_fixture(make_sgd, 3), fixture("sgd_momentum_step3"), kRtol, kAtol);
}

// ---------------------------------------------------------------------------------------------------
// Which parameters get state and updates

TEST_CASE("frozen parameters and parameters without a gradient are left alone", "[optim]") {
  Tensor frozen = fixture("p0").clone();      // requires_grad false
  frozen.set_grad(fixture("grad"));           // even with a gradient lying around
  Tensor no_grad = trainable(fixture("p0"));  // trainable, but backward did not reach it
  Tensor updated = trainable(fixture("p0"));
  updated.set_grad(fixture("grad"));
  AdamW opt({frozen, no_grad, updated}, kAdam);
  opt.step();
  require_close(frozen, fixture("p0"), 0.0, 0.0);
  require_close(no_grad, fixture("p0"), 0.0, 0.0);
  require_close(updated, fixture("adamw_step1"), kRtol, kAtol);
  CHECK(opt.step_count(0) == 0);
  CHECK(opt.step_count(1) == 0);
  CHECK(opt.step_count(2) == 1);
  CHECK(opt.state_bytes() == 2 * updated.nbytes());  // state only for the updated one
}

TEST_CASE("step() runs its updates with grad mode off", "[optim]") {
  // A minimal optimizer built on the base class: p -= lr g, recording the grad mode it saw.
  struct Probe : Optimizer {
    bool grad_mode_seen = true;
    using Optimizer::Optimizer;
    void step() override {
      for_each_update([&](Tensor&, const Tensor&, ParamState&) { grad_mode_seen = GradMode::is_enabled(); });
    }
    std::string kind() const override { return "probe"; }
    std::vector<std::string> buffer_names() const override { return {}; }
    std::map<std::string, double> hyperparameters() const override { return {}; }
  };
  Tensor p = trainable(fixture("p0"));
  p.set_grad(fixture("grad"));
  Probe opt({p}, 0.1);
  REQUIRE(GradMode::is_enabled());
  opt.step();
  CHECK_FALSE(opt.grad_mode_seen);
  CHECK(GradMode::is_enabled());  // restored after the step
  CHECK(opt.step_count(0) == 1);
}

TEST_CASE("Adam state is 2 x the trainable bytes, allocated on the first step as OptimizerState", "[optim]") {
  Generator gen(7);
  Tensor a = trainable(Tensor::randn({3, 4}, gen));
  Tensor b = trainable(Tensor::randn({5}, gen));
  Tensor frozen = Tensor::randn({64, 64}, gen);  // no state, whatever its size
  const int64_t before = live(MemoryCategory::OptimizerState);
  {
    AdamW opt({a, frozen, b}, kAdam);
    CHECK(live(MemoryCategory::OptimizerState) == before);  // lazy: nothing until step()
    a.set_grad(Tensor::ones({3, 4}));
    b.set_grad(Tensor::ones({5}));
    opt.step();
    const int64_t trainable_bytes = static_cast<int64_t>(a.nbytes() + b.nbytes());
    CHECK(live(MemoryCategory::OptimizerState) - before == 2 * trainable_bytes);
    CHECK(opt.state_bytes() == static_cast<size_t>(2 * trainable_bytes));
    opt.step();  // no new allocation on later steps
    CHECK(live(MemoryCategory::OptimizerState) - before == 2 * trainable_bytes);
  }
  CHECK(live(MemoryCategory::OptimizerState) == before);  // released with the optimizer
}

TEST_CASE("SGD keeps a momentum buffer only when momentum != 0", "[optim]") {
  Tensor p = trainable(fixture("p0"));
  p.set_grad(fixture("grad"));
  SGD plain({p}, SgdOptions{.lr = 0.1});
  plain.step();
  CHECK(plain.state_bytes() == 0);
  // p -= lr g
  const std::vector<double> p0 = fixture("p0").to_vector<double>(), g = fixture("grad").to_vector<double>();
  std::vector<double> want(p0.size());
  for (size_t i = 0; i < p0.size(); ++i) want[i] = p0[i] - 0.1 * g[i];
  require_close(p, want, kRtol, kAtol);

  SGD with_momentum({p}, kSgd);
  with_momentum.step();
  CHECK(with_momentum.state_bytes() == p.nbytes());
}

TEST_CASE("zero_grad releases gradient memory", "[optim]") {
  Tensor p = trainable(fixture("p0"));
  SGD opt({p}, SgdOptions{.lr = 0.1});
  const int64_t before = live(MemoryCategory::Gradient);
  {
    MemoryCategoryGuard as_gradient(MemoryCategory::Gradient);
    p.set_grad(fixture("grad").clone());
  }
  CHECK(live(MemoryCategory::Gradient) - before == static_cast<int64_t>(p.nbytes()));
  opt.zero_grad();
  CHECK_FALSE(p.grad().defined());
  CHECK(live(MemoryCategory::Gradient) == before);
}

TEST_CASE("optimizers check their hyperparameters and names", "[optim]") {
  Tensor p = trainable(fixture("p0"));
  CHECK_THROWS_WITH(AdamW({p}, AdamOptions{.beta1 = 1.0}), Contains("beta1"));
  CHECK_THROWS_WITH(SGD({p}, SgdOptions{.nesterov = true}), Contains("nesterov"));
  CHECK_THROWS_WITH(SGD({p}, SgdOptions{.lr = -1.0}), Contains("learning rate"));
  CHECK_THROWS_WITH(SGD({p, p.detach()}, {}, {"w", "w"}), Contains("appears twice"));
  CHECK_THROWS_WITH(SGD({p}, {}, {"a", "b"}), Contains("2 parameter names for 1 parameters"));
}

// ---------------------------------------------------------------------------------------------------
// Gradient clipping

TEST_CASE("clip_grad_norm scales by max_norm / (norm + 1e-6) above max_norm", "[optim]") {
  Tensor a = trainable(Tensor::zeros({2}));
  Tensor b = trainable(Tensor::zeros({1}));
  Tensor none = trainable(Tensor::zeros({3}));  // no gradient: skipped
  auto set_grads = [&] {
    a.set_grad(Tensor::from_vector<float>({3.f, 4.f}, {2}));
    b.set_grad(Tensor::from_vector<float>({12.f}, {1}));
  };
  set_grads();
  CHECK(clip_grad_norm({a, b, none}, 100.0) == Approx(13.0));  // sqrt(9 + 16 + 144); below max: unchanged
  require_close(a.grad(), std::vector<double>{3, 4}, 0.0, 0.0);

  const double scale = 6.5 / (13.0 + 1e-6);
  CHECK(clip_grad_norm({a, b, none}, 6.5) == Approx(13.0));  // returns the norm before clipping
  require_close(a.grad(), std::vector<double>{3 * scale, 4 * scale}, 1e-6, 0.0);
  require_close(b.grad(), std::vector<double>{12 * scale}, 1e-6, 0.0);
  CHECK(clip_grad_norm({a, b}, 100.0) == Approx(6.5).epsilon(1e-6));

  // A non-finite norm is an error naming the first broken gradient, and nothing is scaled; asked not to
  // throw, clipping returns the norm unscaled.
  set_grads();
  b.set_grad(Tensor::from_vector<float>({std::numeric_limits<float>::infinity()}, {1}));
  CHECK_THROWS_WITH(clip_grad_norm({a, b}, 1.0, true, {"a", "b"}), Catch::Contains("'b'") && Catch::Contains("inf"));
  require_close(a.grad(), std::vector<double>{3, 4}, 0.0, 0.0);
  CHECK(std::isinf(clip_grad_norm({a, b}, 1.0, /*error_if_nonfinite=*/false)));
  require_close(a.grad(), std::vector<double>{3, 4}, 0.0, 0.0);
  CHECK(first_nonfinite_gradient({none, a, b}) == 2);
  a.set_grad(Tensor::from_vector<float>({std::nanf(""), 1.f}, {2}));
  CHECK(first_nonfinite_gradient({none, a, b}) == 1);
  CHECK(std::isnan(grad_norm({a})));
}

// ---------------------------------------------------------------------------------------------------
// Learning-rate schedules

TEST_CASE("learning-rate schedules", "[optim]") {
  const LRSchedule constant{.kind = ScheduleKind::Constant, .lr = 1.0, .warmup_steps = 10};
  CHECK(constant.lr_at(0) == Approx(0.1));  // lr (step + 1) / warmup
  CHECK(constant.lr_at(4) == Approx(0.5));
  CHECK(constant.lr_at(9) == Approx(1.0));
  CHECK(constant.lr_at(1000) == Approx(1.0));

  const LRSchedule cosine{
      .kind = ScheduleKind::Cosine, .lr = 1.0, .warmup_steps = 10, .total_steps = 110, .min_lr = 0.1};
  CHECK(cosine.lr_at(9) == Approx(1.0));
  CHECK(cosine.lr_at(10) == Approx(1.0));  // progress 0
  CHECK(cosine.lr_at(35) == Approx(0.1 + 0.45 * (1 + std::cos(std::numbers::pi * 0.25))));
  CHECK(cosine.lr_at(60) == Approx(0.55));  // progress 1/2: halfway between max and min
  CHECK(cosine.lr_at(110) == Approx(0.1));
  CHECK(cosine.lr_at(500) == Approx(0.1));  // clamped after the end

  const LRSchedule linear{.kind = ScheduleKind::Linear, .lr = 2.0, .warmup_steps = 0, .total_steps = 100};
  CHECK(linear.lr_at(0) == Approx(2.0));
  CHECK(linear.lr_at(25) == Approx(1.5));
  CHECK(linear.lr_at(100) == Approx(0.0).margin(1e-12));

  CHECK(parse_schedule("cosine") == ScheduleKind::Cosine);
  CHECK(parse_schedule("linear") == ScheduleKind::Linear);
  CHECK(parse_schedule("constant") == ScheduleKind::Constant);
  CHECK_THROWS_WITH(parse_schedule("exponential"), Contains("unknown learning-rate schedule 'exponential'"));
  CHECK_THROWS_WITH((LRSchedule{.kind = ScheduleKind::Cosine, .lr = 1.0}.lr_at(0)), Contains("total_steps"));
  CHECK_THROWS_WITH(constant.lr_at(-1), Contains("step must be >= 0"));
}

// ---------------------------------------------------------------------------------------------------
// Save / load

TEST_CASE("optimizer state save/load resumes identically", "[optim]") {
  TempDir dir;
  Generator gen(3);
  const Tensor w0 = Tensor::randn({4, 3}, gen), b0 = Tensor::randn({3}, gen);
  std::vector<std::pair<Tensor, Tensor>> grads;  // a different gradient at each step
  for (int s = 0; s < 3; ++s) grads.emplace_back(Tensor::randn({4, 3}, gen), Tensor::randn({3}, gen));
  const std::vector<std::string> names{"layer.weight", "layer.bias"};

  auto step = [&](Optimizer& opt, Tensor& w, Tensor& b, int s) {
    opt.zero_grad();
    w.set_grad(grads[s].first);
    b.set_grad(grads[s].second);
    opt.step();
  };

  SECTION("AdamW") {
    Tensor w = trainable(w0), b = trainable(b0);
    AdamW straight({w, b}, kAdam, names);
    for (int s = 0; s < 3; ++s) step(straight, w, b, s);

    Tensor w1 = trainable(w0), b1 = trainable(b0);
    AdamW first({w1, b1}, kAdam, names);
    step(first, w1, b1, 0);
    first.set_lr(kAdam.lr);
    first.save_state(dir.file("adamw.safetensors"));
    {
      const SafeTensorsFile saved = SafeTensorsFile::open(dir.file("adamw.safetensors"));
      CHECK(saved.contains("state.layer.weight.exp_avg"));
      CHECK(saved.contains("state.layer.bias.exp_avg_sq"));
      CHECK(saved.metadata().at("optimizer") == "adamw");
    }

    // A fresh optimizer (another lr, to see it restored) over copies of the parameters after step 1.
    Tensor w2 = trainable(w1), b2 = trainable(b1);
    AdamW resumed({w2, b2}, AdamOptions{.lr = 0.5, .weight_decay = 0.1}, names);
    resumed.load_state(dir.file("adamw.safetensors"));
    CHECK(resumed.lr() == kAdam.lr);
    CHECK(resumed.step_count(0) == 1);
    CHECK(resumed.state_bytes() == first.state_bytes());
    for (int s = 1; s < 3; ++s) step(resumed, w2, b2, s);
    require_close(w2, w, 0.0, 0.0);  // the same arithmetic: bit for bit
    require_close(b2, b, 0.0, 0.0);
    CHECK(resumed.step_count(1) == 3);
  }

  SECTION("SGD with momentum") {
    Tensor w = trainable(w0), b = trainable(b0);
    SGD straight({w, b}, kSgd, names);
    for (int s = 0; s < 3; ++s) step(straight, w, b, s);

    Tensor w1 = trainable(w0), b1 = trainable(b0);
    SGD first({w1, b1}, kSgd, names);
    step(first, w1, b1, 0);
    first.save_state(dir.file("sgd.safetensors"));

    Tensor w2 = trainable(w1), b2 = trainable(b1);
    SGD resumed({w2, b2}, kSgd, names);
    resumed.load_state(dir.file("sgd.safetensors"));
    for (int s = 1; s < 3; ++s) step(resumed, w2, b2, s);
    require_close(w2, w, 0.0, 0.0);
    require_close(b2, b, 0.0, 0.0);
  }
}

TEST_CASE("loading a mismatched optimizer state fails with lora::Error", "[optim]") {
  TempDir dir;
  const std::string path = dir.file("state.safetensors");
  Tensor w = trainable(Tensor::zeros({4, 3})), b = trainable(Tensor::zeros({3}));
  w.set_grad(Tensor::ones({4, 3}));
  b.set_grad(Tensor::ones({3}));
  AdamW saved({w, b}, kAdam, {"w", "b"});
  saved.step();
  saved.save_state(path);

  SECTION("a different shape") {
    AdamW other({trainable(Tensor::zeros({3, 4})), trainable(Tensor::zeros({3}))}, kAdam, {"w", "b"});
    CHECK_THROWS_AS(other.load_state(path), Error);
    CHECK_THROWS_WITH(other.load_state(path), Contains("'state.w.exp_avg' has shape [4, 3]") && Contains("[3, 4]"));
    CHECK(other.state_bytes() == 0);  // unchanged by the failed load
  }
  SECTION("a different parameter count") {
    AdamW other({trainable(Tensor::zeros({4, 3}))}, kAdam, {"w"});
    CHECK_THROWS_WITH(other.load_state(path), Contains("holds 2 parameters") && Contains("has 1"));
  }
  SECTION("different parameter names") {
    AdamW other({trainable(Tensor::zeros({4, 3})), trainable(Tensor::zeros({3}))}, kAdam, {"w", "bias"});
    CHECK_THROWS_WITH(other.load_state(path), Contains("'b' in the file but 'bias' here"));
  }
  SECTION("another optimizer's state") {
    SGD other({trainable(Tensor::zeros({4, 3})), trainable(Tensor::zeros({3}))}, kSgd, {"w", "b"});
    CHECK_THROWS_WITH(other.load_state(path), Contains("saved by adamw, not sgd"));
  }
}
