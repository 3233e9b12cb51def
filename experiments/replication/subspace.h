// The subspace analysis of the LoRA paper's section 7.2 (Hu et al., 2021, Figure 3): how much of the
// directions an adapter of rank r1 learned is also in those of an adapter of rank r2.
//
// For A1 [r1, d] and A2 [r2, d] (LoRA's down-projections), with V1, V2 their right-singular vectors ordered
// by singular value (the columns of V in A = U S V^T, each of length d):
//   phi(A1, A2, i, j) = || V1[:, :i]^T V2[:, :j] ||_F^2 / min(i, j)      in [0, 1]
// 1 when the top-i directions of one lie in the span of the top-j of the other, 0 when orthogonal. Two
// random subspaces of R^d give max(i, j) / d on average, so at a small width the baseline is far from 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lora::replicate {

// A dense row-major matrix of doubles, rows x cols.
struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<double> v;
  double& at(int64_t r, int64_t c) { return v[static_cast<size_t>(r * cols + c)]; }
  double at(int64_t r, int64_t c) const { return v[static_cast<size_t>(r * cols + c)]; }
};

// Eigenvalues (descending) and eigenvectors (the columns of the result, in the same order) of a symmetric
// matrix, by cyclic Jacobi rotations (exact to double rounding for the small r x r Gram matrices here).
void symmetric_eigen(const Matrix& s, std::vector<double>& values, Matrix& vectors);

// The right-singular vectors of a [r, d] with r <= d, as the rows of a [r, d] matrix, ordered by singular
// value (descending): v_k = A^T u_k / sigma_k from the eigenvectors u_k of A A^T. Throws when A is
// rank-deficient (a direction with sigma below 1e-10 sigma_max has no defined vector).
Matrix right_singular_vectors(const Matrix& a);

// phi(A1, A2, i, j) for i = 1..r1, j = 1..r2, as a [r1, r2] matrix (row i - 1, column j - 1).
Matrix subspace_similarity(const Matrix& a1, const Matrix& a2);

}  // namespace lora::replicate
