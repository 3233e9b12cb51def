// Text-generation metrics as the E2E NLG Challenge computes them: corpus BLEU-4 with several references
// (NIST mteval-v13a's rules) and ROUGE-L (pycocoevalcap's Rouge), over tokenised text.
//
// BLEU (Papineni et al., 2002), one corpus score, not an average of sentence scores:
//   for n = 1..4:  p_n = sum_i sum_g min(count_hyp_i(g), max_r count_ref_ir(g)) / sum_i sum_g count_hyp_i(g)
//                  (g: the n-grams of hypothesis i; counts clipped by the largest count in any one reference)
//   c = sum_i |hyp_i|,   r = sum_i |ref_i*|   with ref_i* the reference whose length is closest to |hyp_i|
//                        (on a tie the shorter one, as mteval-v13a and NLTK choose)
//   BP = 1 if c > r else exp(1 - r / c)
//   BLEU = BP * exp(sum_n 1/4 log p_n)      (0 when some p_n is 0: no smoothing)
// Tokenisation: mteval-v13a's NormalizeText for Western languages (punctuation split off, '.' and ','
// split unless between digits, '-' split after a digit), lower-cased (mteval without -c).
//
// ROUGE-L F (Lin, 2004) per segment, as pycocoevalcap/rouge/rouge.py computes it:
//   P_r = LCS(hyp, ref_r) / |hyp|,  R_r = LCS(hyp, ref_r) / |ref_r|,  P = max_r P_r,  R = max_r R_r
//   F = (1 + b^2) P R / (R + b^2 P)  with b = 1.2  (0 when P or R is 0)
// and the corpus figure is the mean of F over segments (meaning representations). Note the maxima are
// taken over P and R separately, not over F. pycocoevalcap tokenises with the Stanford PTB tokenizer
// (Java), which lower-cases and drops punctuation tokens; here: the BLEU tokenisation above, lower-cased,
// minus the tokens in pycocoevalcap's punctuation list (. , ? ! : ; - -- ... ' '' ` ``).
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

namespace lora::tools {

using Tokens = std::vector<std::string>;

// mteval-v13a tokenisation (lower-cased unless keep_case).
Tokens bleu_tokenize(std::string_view text, bool keep_case = false);
// The tokens ROUGE-L compares: bleu_tokenize, lower-cased, punctuation tokens removed.
Tokens rouge_tokenize(std::string_view text);

struct BleuScore {
  double bleu = 0;                     // in [0, 1]
  std::array<double, 4> precisions{};  // p_1..p_4
  std::array<int64_t, 4> matches{}, totals{};
  double brevity_penalty = 0;
  int64_t hyp_length = 0, ref_length = 0;
};

// hyps[i] against refs[i] (at least one reference each), tokens already split.
BleuScore corpus_bleu(const std::vector<Tokens>& hyps, const std::vector<std::vector<Tokens>>& refs);
// The same on raw strings, tokenised with bleu_tokenize. (A name of its own: with one overload set, a braced
// {tokens} would silently convert to a list of strings.)
BleuScore corpus_bleu_text(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs);

// Length of the longest common subsequence of two token lists.
int64_t lcs_length(const Tokens& a, const Tokens& b);
// ROUGE-L F of one hypothesis against its references (tokens already split), beta = 1.2.
double rouge_l(const Tokens& hyp, const std::vector<Tokens>& refs, double beta = 1.2);
// Mean ROUGE-L F over segments, on raw strings tokenised with rouge_tokenize.
double corpus_rouge_l(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs);

}  // namespace lora::tools
