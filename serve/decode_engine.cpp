// DecodeEngine: the queue, admission (prompt processing into a slot), the batched decode step, and stop
// conditions.
#include "serve/decode_engine.h"

#include <algorithm>

#include "autograd/grad_mode.h"
#include "models/generate.h"

namespace lora::serve {

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::None:
      return "none";
    case FinishReason::Stop:
      return "stop";
    case FinishReason::Length:
      return "length";
    case FinishReason::Cancelled:
      return "cancelled";
    case FinishReason::Error:
      return "error";
  }
  return "none";
}

struct DecodeEngine::Sequence {
  int64_t id = 0;
  Request request;
  models::SamplingOptions sampling;
  int32_t adapter_slot = -1;  // -1: the base model
  int64_t slot = -1;          // its KV slot once admitted
  int32_t last = -1;          // the token to feed next
  int64_t generated = 0;
  Generator gen;
  std::unique_ptr<tokenizer::IncrementalDecoder> decoder;  // null without a tokenizer
  std::string text;                                        // everything generated so far
  size_t emitted = 0;                                      // bytes of text given to the callback
  size_t hold = 0;                                         // bytes held back: the longest stop string minus one
  bool done = false;
};

DecodeEngine::DecodeEngine(models::CausalLM& model, AdapterSet& adapters, EngineOptions options,
                           const tokenizer::Tokenizer* tokenizer)
    : model_(model), adapters_(adapters), options_(options), tokenizer_(tokenizer) {
  const models::ModelDims d = model_.dims();
  LORA_CHECK(options_.max_sequences > 0, "engine: max_sequences {} must be positive", options_.max_sequences);
  LORA_CHECK(options_.max_queue >= 0, "engine: max_queue {} must not be negative", options_.max_queue);
  LORA_CHECK(options_.capacity >= 0, "engine: capacity {} must not be negative", options_.capacity);
  LORA_CHECK(options_.prompt_pass_tokens >= 1, "engine: prompt_pass_tokens {} must be at least 1",
             options_.prompt_pass_tokens);
  capacity_ = options_.capacity == 0 ? d.context_length : std::min(options_.capacity, d.context_length);
  eos_ = options_.eos_token_ids.empty() ? model_.eos_token_ids() : options_.eos_token_ids;
  pool_ = model_.make_kv_cache(options_.max_sequences, capacity_);
  slots_.resize(static_cast<size_t>(options_.max_sequences));
}

DecodeEngine::~DecodeEngine() = default;

int64_t DecodeEngine::submit(Request request) {
  const RequestOptions& o = request.options;
  const int64_t V = model_.dims().vocab_size, P = static_cast<int64_t>(request.prompt.size());
  LORA_CHECK(P > 0, "the prompt is empty (give at least one token)");
  LORA_CHECK(P <= capacity_, "the prompt has {} tokens, more than the context of {}", P, capacity_);
  for (int32_t t : request.prompt)
    LORA_CHECK(t >= 0 && t < V, "prompt token {} is outside the vocabulary [0, {})", t, V);
  LORA_CHECK(o.max_tokens >= 1, "max_tokens {} must be at least 1", o.max_tokens);
  for (const std::string& s : o.stop) LORA_CHECK(!s.empty(), "a stop string is empty");
  auto s = std::make_unique<Sequence>();
  s->sampling.max_new_tokens = o.max_tokens;
  s->sampling.temperature = o.temperature;
  s->sampling.top_p = o.top_p;
  s->sampling.top_k = o.top_k;
  s->sampling.seed = o.seed;
  s->sampling.validate();
  s->gen.seed(o.seed);
  if (tokenizer_) s->decoder = std::make_unique<tokenizer::IncrementalDecoder>(*tokenizer_);
  for (const std::string& stop : o.stop) s->hold = std::max(s->hold, stop.size() - 1);
  if (!request.adapter.empty()) {
    std::lock_guard<std::mutex> model_lock(model_mutex_);  // the set changes only between steps
    (void)adapters_.slot(request.adapter);                 // throws naming the loaded adapters
  }
  s->request = std::move(request);

  std::lock_guard<std::mutex> lock(queue_mutex_);
  if (static_cast<int64_t>(waiting_.size()) >= options_.max_queue) {
    throw QueueFull(fmt::format("the queue is full ({} requests waiting)", waiting_.size()));
  }
  s->id = next_id_++;
  const int64_t id = s->id;
  waiting_.push_back(std::move(s));
  return id;
}

void DecodeEngine::cancel(int64_t id) {
  std::lock_guard<std::mutex> lock(queue_mutex_);
  cancelled_.push_back(id);
}

int32_t DecodeEngine::load_adapter(const std::string& name, const nn::AdapterState& state) {
  std::lock_guard<std::mutex> model_lock(model_mutex_);
  return adapters_.load(name, state);
}

void DecodeEngine::unload_adapter(const std::string& name) {
  std::lock_guard<std::mutex> model_lock(model_mutex_);
  (void)adapters_.slot(name);  // throws naming the loaded adapters
  for (auto& s : slots_) {
    if (s && s->request.adapter == name) {
      finish(*s, FinishReason::Cancelled);
      s.reset();
    }
  }
  adapters_.unload(name);  // requests waiting for it are ended when their turn comes
}

std::vector<std::string> DecodeEngine::adapter_names() {
  std::lock_guard<std::mutex> model_lock(model_mutex_);
  return adapters_.names();
}

int64_t DecodeEngine::active() const {
  std::lock_guard<std::mutex> lock(queue_mutex_);
  return active_count_;
}

int64_t DecodeEngine::queued() const {
  std::lock_guard<std::mutex> lock(queue_mutex_);
  return static_cast<int64_t>(waiting_.size());
}

void DecodeEngine::finish(Sequence& s, FinishReason reason) {
  s.done = true;
  if (reason == FinishReason::Cancelled) ++cancelled_total_;
  Event e{s.id, -1, s.text.substr(s.emitted), reason};
  s.emitted = s.text.size();
  if (s.request.on_event) s.request.on_event(e);
}

bool DecodeEngine::accept(Sequence& s, int32_t token) {
  ++s.generated;
  const RequestOptions& o = s.request.options;
  const bool eos = (o.stop_at_eos && std::find(eos_.begin(), eos_.end(), token) != eos_.end()) ||
                   std::find(o.stop_tokens.begin(), o.stop_tokens.end(), token) != o.stop_tokens.end();
  // The slot is full when the token just sampled cannot be fed back.
  const bool length = s.generated >= s.request.options.max_tokens || pool_.length(s.slot) >= capacity_;
  if (s.decoder) {
    if (!eos) s.text += s.decoder->push(token);        // a stop token ends the text: "<|im_end|>" is not shown
    if (eos || length) s.text += s.decoder->finish();  // what an incomplete character held back
  }
  // A stop string ends the text before it. Text not yet given out holds any stop string not yet found
  // (the longest one's length minus one is always held back).
  for (const std::string& stop : s.request.options.stop) {
    const size_t at = s.text.find(stop, s.emitted);
    if (at != std::string::npos) {
      s.text.resize(at);
      if (s.request.on_event) s.request.on_event(Event{s.id, token, "", FinishReason::None});
      finish(s, FinishReason::Stop);
      return true;
    }
  }
  // Text safe to give out: all of it at the end, else all but what may be the start of a stop string.
  const size_t safe = eos || length ? s.text.size() : s.text.size() > s.hold ? s.text.size() - s.hold : 0;
  Event e{s.id, token, safe > s.emitted ? s.text.substr(s.emitted, safe - s.emitted) : "", FinishReason::None};
  s.emitted = std::max(s.emitted, safe);
  if (s.request.on_event) s.request.on_event(e);
  if (eos)
    finish(s, FinishReason::Stop);
  else if (length)
    finish(s, FinishReason::Length);
  return s.done;
}

// Every prompt of the pass as one row, padded to the longest with its own last token (padding is never
// cached, attended to, or read for logits: ForwardBatch::lengths).
models::ForwardBatch DecodeEngine::prompt_batch(const std::vector<std::unique_ptr<Sequence>*>& group,
                                                const std::vector<int64_t>& slots) {
  const int64_t B = static_cast<int64_t>(group.size());
  int64_t T = 0;
  for (const auto* s : group) T = std::max<int64_t>(T, static_cast<int64_t>((*s)->request.prompt.size()));
  std::vector<int32_t> ids(static_cast<size_t>(B * T));
  std::vector<int64_t> lengths;
  std::vector<int32_t> adapters;
  for (int64_t b = 0; b < B; ++b) {
    const Sequence& s = **group[static_cast<size_t>(b)];
    const std::vector<int32_t>& prompt = s.request.prompt;
    std::copy(prompt.begin(), prompt.end(), ids.begin() + b * T);
    std::fill(ids.begin() + b * T + static_cast<int64_t>(prompt.size()), ids.begin() + (b + 1) * T, prompt.back());
    lengths.push_back(static_cast<int64_t>(prompt.size()));
    adapters.push_back(s.adapter_slot);
  }
  models::ForwardBatch batch(Tensor::from_vector(ids, {B, T}, model_.device()));
  batch.with_cache(pool_, slots).with_adapters(std::move(adapters)).last_logits();
  if (std::any_of(lengths.begin(), lengths.end(), [T](int64_t n) { return n < T; })) {
    batch.with_lengths(std::move(lengths));
  }
  return batch;
}

models::ForwardBatch DecodeEngine::decode_batch(const std::vector<Sequence*>& rows) {
  std::vector<int32_t> tokens, adapters;
  std::vector<int64_t> slots;
  for (const Sequence* s : rows) {
    tokens.push_back(s->last);
    slots.push_back(s->slot);
    adapters.push_back(s->adapter_slot);
  }
  const int64_t B = static_cast<int64_t>(rows.size());
  return models::ForwardBatch(Tensor::from_vector(tokens, {B, 1}, model_.device()))
      .with_cache(pool_, std::move(slots))
      .with_adapters(std::move(adapters))
      .last_logits();
}

Tensor DecodeEngine::run_prompts(const std::vector<std::unique_ptr<Sequence>*>& group,
                                 const std::vector<int64_t>& slots) {
  for (size_t b = 0; b < group.size(); ++b) {
    Sequence& s = **group[b];
    s.adapter_slot = s.request.adapter.empty() ? -1 : adapters_.slot(s.request.adapter);
    s.slot = slots[b];
    pool_.clear(s.slot);
  }
  ++prompt_passes_;
  Tensor logits = model_.forward(prompt_batch(group, slots)).to(Device::cpu());  // [rows, V]
  return logits.dtype() == DType::F32 ? logits : logits.to(DType::F32);
}

void DecodeEngine::take_first_tokens(const std::vector<std::unique_ptr<Sequence>*>& group, const Tensor& logits) {
  const int64_t V = model_.dims().vocab_size;
  const float* all = logits.data<float>();
  for (size_t b = 0; b < group.size(); ++b) {
    std::unique_ptr<Sequence>& s = *group[b];
    s->last = models::sample_token(
        std::span<const float>(all + static_cast<int64_t>(b) * V, static_cast<size_t>(V)), s->sampling, s->gen);
    if (!accept(*s, s->last)) slots_[static_cast<size_t>(s->slot)] = std::move(s);
  }
}

std::vector<std::unique_ptr<DecodeEngine::Sequence>> DecodeEngine::take_admissions() {
  std::vector<std::unique_ptr<Sequence>> admitted;
  std::lock_guard<std::mutex> lock(queue_mutex_);
  for (int64_t id : cancelled_) {
    for (auto& s : slots_) {
      if (s && s->id == id) {
        finish(*s, FinishReason::Cancelled);
        s.reset();
      }
    }
    for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
      if ((*it)->id == id) {
        finish(**it, FinishReason::Cancelled);
        waiting_.erase(it);
        break;
      }
    }
  }
  cancelled_.clear();
  int64_t free_slots = 0;
  for (const auto& s : slots_) free_slots += s ? 0 : 1;
  while (free_slots-- > 0 && !waiting_.empty()) {
    admitted.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
  return admitted;
}

void DecodeEngine::admit_all(std::vector<std::unique_ptr<Sequence>>& admitted) {
  std::vector<std::unique_ptr<Sequence>*> ready;  // in the order they waited
  for (std::unique_ptr<Sequence>& s : admitted) {
    if (!s->request.adapter.empty() && !adapters_.contains(s->request.adapter)) {
      finish(*s, FinishReason::Cancelled);  // its adapter was unloaded while it waited
      continue;
    }
    ready.push_back(&s);
  }
  std::vector<int64_t> free_slots;  // take_admissions admitted no more requests than there are
  for (size_t k = 0; k < slots_.size(); ++k) {
    if (!slots_[k]) free_slots.push_back(static_cast<int64_t>(k));
  }
  const auto prompt_length = [&](size_t k) { return static_cast<int64_t>((*ready[k])->request.prompt.size()); };
  // On an error with one prompt: that request ends with Error, the ones after it wait again at the head of
  // the queue (their generators untouched), and the error goes on to the caller.
  const auto fail = [&](size_t k) {
    finish(**ready[k], FinishReason::Error);
    std::lock_guard<std::mutex> lock(queue_mutex_);
    for (size_t j = ready.size(); j > k + 1; --j) {
      if (*ready[j - 1]) waiting_.push_front(std::move(*ready[j - 1]));
    }
  };
  for (size_t i = 0; i < ready.size();) {
    // The pass: the next prompts, as many as fit prompt_pass_tokens padded to the longest (at least one).
    size_t end = i + 1;
    for (int64_t longest = prompt_length(i); end < ready.size(); ++end) {
      const int64_t with_next = std::max(longest, prompt_length(end));
      if (with_next * static_cast<int64_t>(end - i + 1) > options_.prompt_pass_tokens) break;
      longest = with_next;
    }
    const std::vector<std::unique_ptr<Sequence>*> group(ready.begin() + static_cast<int64_t>(i),
                                                        ready.begin() + static_cast<int64_t>(end));
    const std::vector<int64_t> slots(free_slots.begin() + static_cast<int64_t>(i),
                                     free_slots.begin() + static_cast<int64_t>(end));
    Tensor logits;
    if (group.size() > 1) {
      try {
        logits = run_prompts(group, slots);
      } catch (...) {
        // The pass failed as a whole: run its prompts one at a time, so that only a prompt that fails alone
        // ends with an error (each slot is emptied again first).
      }
    }
    for (size_t k = i; k < end; ++k) {
      const std::vector<std::unique_ptr<Sequence>*> one{ready[k]};
      try {
        if (logits.defined()) {
          const size_t row = k - i;
          take_first_tokens(one, logits.narrow_rows(static_cast<int64_t>(row), 1));
        } else {
          take_first_tokens(one, run_prompts(one, {free_slots[k]}));
        }
      } catch (...) {
        fail(k);
        throw;
      }
    }
    i = end;
  }
}

void DecodeEngine::decode_active() {
  std::vector<Sequence*>& rows = decode_rows_;  // row b: the sequence in the b-th occupied slot
  rows.clear();
  for (auto& s : slots_) {
    if (s) rows.push_back(s.get());
  }
  if (rows.empty()) return;
  // Every tensor of the step, the logits' host copy included, is carved from the engine's arena: after a
  // step or two at a batch size the step takes nothing from the allocator.
  StepArena::Scope in_arena(arena_);
  const int64_t V = model_.dims().vocab_size;
  Tensor logits;  // [B, V] f32 on the host
  try {
    logits = model_.forward(decode_batch(rows)).to(Device::cpu());
    if (logits.dtype() != DType::F32) logits = logits.to(DType::F32);
  } catch (...) {
    for (auto& s : slots_) {
      if (s) finish(*s, FinishReason::Error);
      s.reset();
    }
    throw;
  }
  const float* all = logits.data<float>();
  for (size_t b = 0; b < rows.size(); ++b) {
    Sequence& s = *rows[b];
    s.last = models::sample_token(std::span<const float>(all + static_cast<int64_t>(b) * V, static_cast<size_t>(V)),
                                  s.sampling, s.gen);
    accept(s, s.last);
  }
  for (auto& s : slots_) {
    if (s && s->done) s.reset();
  }
}

bool DecodeEngine::step() {
  std::lock_guard<std::mutex> model_lock(model_mutex_);
  NoGradGuard no_grad;
  model_.eval();
  // active() counts the occupied slots after the step, also when the model failed in it.
  const auto count_active = [this] {
    std::lock_guard<std::mutex> lock(queue_mutex_);
    active_count_ = 0;
    for (const auto& s : slots_) active_count_ += s ? 1 : 0;
    return active_count_ > 0 || !waiting_.empty();
  };
  try {
    std::vector<std::unique_ptr<Sequence>> admitted = take_admissions();
    admit_all(admitted);
    decode_active();
  } catch (...) {
    count_active();
    throw;
  }
  return count_active();
}

}  // namespace lora::serve
