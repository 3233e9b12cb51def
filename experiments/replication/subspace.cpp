// Normalized subspace similarity between two LoRA down-projections (the paper's Figure 3), with the small
// symmetric eigensolver it needs.
#include "experiments/replication/subspace.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace lora::replicate {

void symmetric_eigen(const Matrix& s, std::vector<double>& values, Matrix& vectors) {
  LORA_CHECK(s.rows == s.cols, "symmetric_eigen: {} x {} is not square", s.rows, s.cols);
  const int64_t n = s.rows;
  Matrix a = s, q{n, n, std::vector<double>(static_cast<size_t>(n * n), 0.0)};
  for (int64_t i = 0; i < n; ++i) q.at(i, i) = 1.0;
  double total = 0;
  for (double x : a.v) total += x * x;
  // Cyclic Jacobi: each rotation zeroes a(p, r) and keeps A = Q^T S Q; stops when the off-diagonal part is
  // at rounding level. Converges quadratically: a few sweeps for n <= 64.
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (int64_t p = 0; p < n; ++p)
      for (int64_t r = p + 1; r < n; ++r) off += a.at(p, r) * a.at(p, r);
    if (off <= 1e-30 * std::max(total, 1e-300)) break;
    for (int64_t p = 0; p < n; ++p) {
      for (int64_t r = p + 1; r < n; ++r) {
        const double apr = a.at(p, r);
        if (apr == 0.0) continue;
        // The rotation angle: tan(2 theta) = 2 a_pr / (a_rr - a_pp), the smaller root for stability.
        const double tau = (a.at(r, r) - a.at(p, p)) / (2.0 * apr);
        const double t = (tau >= 0 ? 1.0 : -1.0) / (std::abs(tau) + std::sqrt(1.0 + tau * tau));
        const double c = 1.0 / std::sqrt(1.0 + t * t), sn = t * c;
        for (int64_t k = 0; k < n; ++k) {  // columns p and r of A Q
          const double akp = a.at(k, p), akr = a.at(k, r);
          a.at(k, p) = c * akp - sn * akr;
          a.at(k, r) = sn * akp + c * akr;
        }
        for (int64_t k = 0; k < n; ++k) {  // rows p and r of Q^T (A Q)
          const double apk = a.at(p, k), ark = a.at(r, k);
          a.at(p, k) = c * apk - sn * ark;
          a.at(r, k) = sn * apk + c * ark;
        }
        for (int64_t k = 0; k < n; ++k) {
          const double qkp = q.at(k, p), qkr = q.at(k, r);
          q.at(k, p) = c * qkp - sn * qkr;
          q.at(k, r) = sn * qkp + c * qkr;
        }
      }
    }
  }
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return a.at(x, x) > a.at(y, y); });
  values.assign(static_cast<size_t>(n), 0.0);
  vectors = Matrix{n, n, std::vector<double>(static_cast<size_t>(n * n), 0.0)};
  for (int64_t k = 0; k < n; ++k) {
    values[static_cast<size_t>(k)] = a.at(order[static_cast<size_t>(k)], order[static_cast<size_t>(k)]);
    for (int64_t i = 0; i < n; ++i) vectors.at(i, k) = q.at(i, order[static_cast<size_t>(k)]);
  }
}

Matrix right_singular_vectors(const Matrix& a) {
  const int64_t r = a.rows, d = a.cols;
  LORA_CHECK(r >= 1 && r <= d, "right_singular_vectors: a [{}, {}] matrix needs 1 <= rows <= cols", r, d);
  Matrix gram{r, r, std::vector<double>(static_cast<size_t>(r * r), 0.0)};  // A A^T  [r, r]
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double s = 0;
      for (int64_t k = 0; k < d; ++k) s += a.at(i, k) * a.at(j, k);
      gram.at(i, j) = gram.at(j, i) = s;
    }
  std::vector<double> lambda;
  Matrix u;
  symmetric_eigen(gram, lambda, u);
  const double sigma_max = std::sqrt(std::max(lambda[0], 0.0));
  Matrix v{r, d, std::vector<double>(static_cast<size_t>(r * d), 0.0)};  // row k: v_k = A^T u_k / sigma_k
  for (int64_t k = 0; k < r; ++k) {
    const double sigma = std::sqrt(std::max(lambda[static_cast<size_t>(k)], 0.0));
    LORA_CHECK(sigma > 1e-10 * sigma_max && sigma > 0, "right_singular_vectors: the [{}, {}] matrix has rank {} < {}",
               r, d, k, r);
    for (int64_t c = 0; c < d; ++c) {
      double s = 0;
      for (int64_t i = 0; i < r; ++i) s += a.at(i, c) * u.at(i, k);
      v.at(k, c) = s / sigma;
    }
  }
  return v;
}

Matrix subspace_similarity(const Matrix& a1, const Matrix& a2) {
  LORA_CHECK(a1.cols == a2.cols, "subspace_similarity: widths {} and {} differ", a1.cols, a2.cols);
  const Matrix v1 = right_singular_vectors(a1), v2 = right_singular_vectors(a2);
  const int64_t r1 = a1.rows, r2 = a2.rows, d = a1.cols;
  Matrix dots{r1, r2, std::vector<double>(static_cast<size_t>(r1 * r2), 0.0)};  // <v1_i, v2_j>
  for (int64_t i = 0; i < r1; ++i)
    for (int64_t j = 0; j < r2; ++j) {
      double s = 0;
      for (int64_t c = 0; c < d; ++c) s += v1.at(i, c) * v2.at(j, c);
      dots.at(i, j) = s * s;
    }
  // ||V1[:, :i]^T V2[:, :j]||_F^2 is the sum of the squared dots over the top-left i x j block: a 2-D prefix sum.
  Matrix phi{r1, r2, std::vector<double>(static_cast<size_t>(r1 * r2), 0.0)};
  for (int64_t i = 0; i < r1; ++i)
    for (int64_t j = 0; j < r2; ++j) {
      double s = dots.at(i, j);
      if (i > 0) s += phi.at(i - 1, j);
      if (j > 0) s += phi.at(i, j - 1);
      if (i > 0 && j > 0) s -= phi.at(i - 1, j - 1);
      phi.at(i, j) = s;
    }
  for (int64_t i = 0; i < r1; ++i)
    for (int64_t j = 0; j < r2; ++j) phi.at(i, j) /= static_cast<double>(std::min(i, j) + 1);
  return phi;
}

}  // namespace lora::replicate
