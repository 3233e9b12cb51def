// DecodeEngine: continuous batching over a preallocated pool of KV-cache slots. Requests wait in a bounded
// queue; each step admits waiting requests into free slots (their prompts run together, several rows padded
// to the longest in one pass, each row with its adapter), then runs one decode step for every active
// sequence at once: one token per row, each row at its own position in its own slot and with its own adapter
// (serve/adapter_set.h). Each of those forward passes is one models::ForwardBatch (prompt_batch,
// decode_batch) that names the rows' slots, adapters and prompt lengths; nothing is set on the model or the
// cache around it. A sequence that finishes (end of sequence, a stop string, max_tokens, the end of its slot)
// leaves at once and frees its slot for the next waiting request. Each sequence samples from its own
// generator, so what else is in the batch changes its logits at most by rounding (a matrix product of more
// rows may take another kernel, which sums in another order), never its sampling.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/random.h"
#include "core/step_arena.h"
#include "models/causal_lm.h"
#include "models/forward_batch.h"
#include "models/tokenizer/tokenizer.h"
#include "serve/adapter_set.h"

namespace lora::serve {

struct RequestOptions {
  int64_t max_tokens = 16;   // at least 1
  double temperature = 1.0;  // 0: greedy
  double top_p = 1.0;        // (0, 1]
  int64_t top_k = 0;         // 0: all
  uint64_t seed = 0;
  std::vector<std::string> stop;          // stop strings: the text ends before the first one
  bool stop_at_eos = true;                // the engine's end-of-sequence tokens (EngineOptions) end it
  std::vector<int32_t> stop_tokens = {};  // more tokens that end it (an adapter's chat template's end of turn)
};

// Error: the model failed on this sequence's step (step() then rethrows what it threw).
enum class FinishReason { None, Stop, Length, Cancelled, Error };
const char* finish_reason_name(FinishReason reason);  // "stop", "length", "cancelled", "error"

// What a request's callback sees: each new token with the text it completes (text may be empty while a
// character or what may be the start of a stop string is held back), then one last event with the finish
// reason and any text held back until then.
struct Event {
  int64_t id = 0;
  int32_t token = -1;  // -1 in the last event
  std::string text;
  FinishReason finish = FinishReason::None;
};

struct Request {
  std::vector<int32_t> prompt;
  std::string adapter;  // "" : the base model
  RequestOptions options;
  std::function<void(const Event&)> on_event;  // called on the engine's thread
};

struct EngineOptions {
  int64_t max_sequences = 8;  // KV-cache slots: sequences decoded at once
  int64_t max_queue = 64;     // waiting requests beyond which submit() refuses
  int64_t capacity = 0;       // tokens per slot (prompt + generated); 0: the model's context
  // Prompts admitted in one step run together in passes of at most this many tokens, counting padding
  // (rows x the longest prompt of the pass); a longer prompt runs alone. 1: one prompt per pass.
  int64_t prompt_pass_tokens = 2048;
  // The tokens that end a sequence (models/stop_tokens.h gathers them); empty: the model's eos_token_ids().
  // A stop token's text is not part of the sequence's text.
  std::vector<int64_t> eos_token_ids = {};
};

// submit() refuses when the queue is full (the server answers 429/503).
struct QueueFull : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class DecodeEngine {
 public:
  // tokenizer: turns each sequence's tokens into text (events' text, stop strings); null: no text. It must
  // outlive the engine.
  DecodeEngine(models::CausalLM& model, AdapterSet& adapters, EngineOptions options,
               const tokenizer::Tokenizer* tokenizer = nullptr);
  ~DecodeEngine();
  DecodeEngine(const DecodeEngine&) = delete;
  DecodeEngine& operator=(const DecodeEngine&) = delete;

  // Checks the request (a prompt of known tokens that fits a slot, a loaded adapter, valid sampling
  // settings) and queues it; returns its id. Thread-safe.
  int64_t submit(Request request);
  // Ends a waiting or active request with FinishReason::Cancelled at the next step. Thread-safe.
  void cancel(int64_t id);
  // Admits waiting requests into free slots, then decodes one token for every active sequence. Returns
  // whether any sequence is active or waiting afterwards. When the model throws, the sequences of that
  // prompt or step end with FinishReason::Error and the exception is rethrown; the others go on.
  bool step();

  // Adapters changed between steps. Unloading ends the sequences that use the adapter (Cancelled): none
  // goes on with the base model in its place.
  int32_t load_adapter(const std::string& name, const nn::AdapterState& state);
  void unload_adapter(const std::string& name);
  std::vector<std::string> adapter_names();

  int64_t active() const;
  int64_t queued() const;
  int64_t cancelled_total() const { return cancelled_total_; }  // requests ended by cancel() or an unload
  int64_t prompt_passes() const { return prompt_passes_; }        // forward passes over prompts, failed ones too
  int64_t capacity() const { return capacity_; }
  const EngineOptions& options() const { return options_; }
  // The buffer the decode step's tensors are carved from (its capacity and counts, for benchmarks and tests).
  const StepArena& step_arena() const { return arena_; }

 private:
  struct Sequence;
  // Applies the cancellations and takes as many waiting requests as there are free slots.
  std::vector<std::unique_ptr<Sequence>> take_admissions();
  // Runs the admitted prompts into free slots, several per pass (EngineOptions::prompt_pass_tokens). When a
  // pass of several fails, its prompts run again one at a time; on a model error with one prompt, ends that
  // sequence and puts the ones not yet run back at the head of the queue before rethrowing.
  void admit_all(std::vector<std::unique_ptr<Sequence>>& admitted);
  // Runs the prompts of `group` into their emptied slots (slots[b] for row b) in one pass; returns the
  // logits of each row's last prompt token, [rows, V] f32 on the host.
  Tensor run_prompts(const std::vector<std::unique_ptr<Sequence>*>& group, const std::vector<int64_t>& slots);
  // Samples each row's first token from `logits` [rows, V] and moves each sequence into its slot unless it
  // has finished already.
  void take_first_tokens(const std::vector<std::unique_ptr<Sequence>*>& group, const Tensor& logits);
  // One token for every active sequence.
  void decode_active();
  // The forward passes: a prompt into its slot, and one token per active sequence, each row in its own
  // slot with its own adapter; logits of each row's last position.
  models::ForwardBatch prompt_batch(const std::vector<std::unique_ptr<Sequence>*>& group,
                                    const std::vector<int64_t>& slots);
  models::ForwardBatch decode_batch(const std::vector<Sequence*>& rows);
  // Appends a sampled token; returns whether the sequence is finished.
  bool accept(Sequence& s, int32_t token);
  void finish(Sequence& s, FinishReason reason);

  models::CausalLM& model_;
  AdapterSet& adapters_;
  EngineOptions options_;
  const tokenizer::Tokenizer* tokenizer_;
  int64_t capacity_;
  std::vector<int64_t> eos_;
  nn::KVCache pool_;  // [max_sequences, H_kv, capacity, D] per layer, allocated once

  mutable std::mutex queue_mutex_;  // guards waiting_, cancelled_, next_id_, active_count_
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<int64_t> cancelled_;
  int64_t next_id_ = 1;
  int64_t active_count_ = 0;
  std::atomic<int64_t> cancelled_total_{0};
  std::atomic<int64_t> prompt_passes_{0};

  std::mutex model_mutex_;
  std::vector<std::unique_ptr<Sequence>> slots_;  // by KV slot; null: free
  // The decode step's tensors (core/step_arena.h) and its list of rows, kept from step to step.
  StepArena arena_;
  std::vector<Sequence*> decode_rows_;
};

}  // namespace lora::serve
