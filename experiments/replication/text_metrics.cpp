// Corpus BLEU-4 (mteval-v13a rules) and ROUGE-L (pycocoevalcap), the E2E NLG Challenge's way; the
// formulas are in text_metrics.h.
#include "experiments/replication/text_metrics.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <map>
#include <regex>
#include <set>

#include "core/error.h"

namespace lora::tools {

namespace {

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size())
    s.replace(pos, from.size(), to);
}

// mteval-v13a's punctuation class [\{-\~\[-\` -\&\(-\+\:-\@\/]: { | } ~ [ \ ] ^ _ ` space ! " # $ % & ( ) * +
// : ; < = > ? @ /  (not ' - . , which have their own rules or none).
bool is_split_punctuation(char c) {
  return (c >= '{' && c <= '~') || (c >= '[' && c <= '`') || (c >= ' ' && c <= '&') || (c >= '(' && c <= '+') ||
         (c >= ':' && c <= '@') || c == '/';
}

Tokens split_whitespace(const std::string& s) {
  Tokens out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    size_t j = i;
    while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
    if (j > i) out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

using NgramCounts = std::map<std::vector<std::string>, int64_t>;

NgramCounts count_ngrams(const Tokens& tokens, size_t n) {
  NgramCounts counts;
  for (size_t i = 0; i + n <= tokens.size(); ++i) ++counts[Tokens(tokens.begin() + i, tokens.begin() + i + n)];
  return counts;
}

}  // namespace

Tokens bleu_tokenize(std::string_view text, bool keep_case) {
  std::string s(text);
  replace_all(s, "<skipped>", "");
  replace_all(s, "-\n", "");
  std::replace(s.begin(), s.end(), '\n', ' ');
  replace_all(s, "&quot;", "\"");
  replace_all(s, "&amp;", "&");
  replace_all(s, "&lt;", "<");
  replace_all(s, "&gt;", ">");
  if (!keep_case) {
    for (char& c : s) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
  }
  std::string spaced = " ";
  for (char c : s) {
    if (is_split_punctuation(c)) {
      spaced += ' ';
      spaced += c;
      spaced += ' ';
    } else {
      spaced += c;
    }
  }
  spaced += " ";
  // Period and comma unless preceded by a digit, unless followed by a digit; a dash after a digit.
  static const std::regex before(R"(([^0-9])([\.,]))"), after(R"(([\.,])([^0-9]))"), dash(R"(([0-9])(-))");
  spaced = std::regex_replace(spaced, before, "$1 $2 ");
  spaced = std::regex_replace(spaced, after, " $1 $2");
  spaced = std::regex_replace(spaced, dash, "$1 $2 ");
  return split_whitespace(spaced);
}

Tokens rouge_tokenize(std::string_view text) {
  static const std::set<std::string> punctuation = {"''", "'", "``", "`", "-lrb-", "-rrb-", "-lcb-", "-rcb-", ".",
                                                    "?",  "!", ",",  ":", "-",     "--",    "...",   ";"};
  Tokens out;
  for (auto& t : bleu_tokenize(text, /*keep_case=*/false)) {
    if (!punctuation.count(t)) out.push_back(std::move(t));
  }
  return out;
}

BleuScore corpus_bleu(const std::vector<Tokens>& hyps, const std::vector<std::vector<Tokens>>& refs) {
  LORA_CHECK(hyps.size() == refs.size(), "BLEU: {} hypotheses but {} reference sets", hyps.size(), refs.size());
  BleuScore score;
  for (size_t i = 0; i < hyps.size(); ++i) {
    LORA_CHECK(!refs[i].empty(), "BLEU: hypothesis {} has no reference", i);
    const int64_t c = static_cast<int64_t>(hyps[i].size());
    // The closest reference length; on a tie the shorter reference.
    int64_t best = -1;
    for (const Tokens& r : refs[i]) {
      const int64_t len = static_cast<int64_t>(r.size());
      if (best < 0 || std::llabs(len - c) < std::llabs(best - c) ||
          (std::llabs(len - c) == std::llabs(best - c) && len < best)) {
        best = len;
      }
    }
    score.hyp_length += c;
    score.ref_length += best;
    for (size_t n = 1; n <= 4; ++n) {
      // The clip for each n-gram: its largest count in any single reference.
      NgramCounts max_ref;
      for (const Tokens& r : refs[i]) {
        for (const auto& [g, k] : count_ngrams(r, n)) max_ref[g] = std::max(max_ref[g], k);
      }
      for (const auto& [g, k] : count_ngrams(hyps[i], n)) {
        const auto it = max_ref.find(g);
        score.matches[n - 1] += std::min(k, it == max_ref.end() ? int64_t{0} : it->second);
        score.totals[n - 1] += k;
      }
    }
  }
  double log_sum = 0;
  bool zero = false;
  for (size_t n = 0; n < 4; ++n) {
    score.precisions[n] =
        score.totals[n] > 0 ? static_cast<double>(score.matches[n]) / static_cast<double>(score.totals[n]) : 0;
    if (score.matches[n] == 0)
      zero = true;
    else
      log_sum += 0.25 * std::log(score.precisions[n]);
  }
  const double c = static_cast<double>(score.hyp_length), r = static_cast<double>(score.ref_length);
  score.brevity_penalty = c > r ? 1.0 : (c > 0 ? std::exp(1.0 - r / c) : 0.0);
  score.bleu = zero ? 0.0 : score.brevity_penalty * std::exp(log_sum);
  return score;
}

BleuScore corpus_bleu_text(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs) {
  std::vector<Tokens> h;
  std::vector<std::vector<Tokens>> r(refs.size());
  for (const auto& s : hyps) h.push_back(bleu_tokenize(s));
  for (size_t i = 0; i < refs.size(); ++i) {
    for (const auto& s : refs[i]) r[i].push_back(bleu_tokenize(s));
  }
  return corpus_bleu(h, r);
}

int64_t lcs_length(const Tokens& a, const Tokens& b) {
  // lengths[j] = LCS(a[0, i), b[0, j)), one row at a time.
  std::vector<int64_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

double rouge_l(const Tokens& hyp, const std::vector<Tokens>& refs, double beta) {
  LORA_CHECK(!refs.empty(), "ROUGE-L: no reference");
  double p = 0, r = 0;
  for (const Tokens& ref : refs) {
    const double lcs = static_cast<double>(lcs_length(ref, hyp));
    if (!hyp.empty()) p = std::max(p, lcs / static_cast<double>(hyp.size()));
    if (!ref.empty()) r = std::max(r, lcs / static_cast<double>(ref.size()));
  }
  if (p == 0 || r == 0) return 0;
  return (1 + beta * beta) * p * r / (r + beta * beta * p);
}

double corpus_rouge_l(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs) {
  LORA_CHECK(hyps.size() == refs.size() && !hyps.empty(), "ROUGE-L: {} hypotheses but {} reference sets", hyps.size(),
             refs.size());
  double total = 0;
  for (size_t i = 0; i < hyps.size(); ++i) {
    std::vector<Tokens> r;
    for (const auto& s : refs[i]) r.push_back(rouge_tokenize(s));
    total += rouge_l(rouge_tokenize(hyps[i]), r);
  }
  return total / static_cast<double>(hyps.size());
}

}  // namespace lora::tools
