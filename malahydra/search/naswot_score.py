"""NASWOT score of an untrained network, in the variant MALA uses.

NASWOT (neural architecture search without training) ranks candidate
architectures from one mini-batch passed through a freshly initialized
network. This module computes the Jacobian-correlation surrogate of the first
arXiv version of Mellor et al., "Neural Architecture Search without Training"
(arXiv:2006.04647v1), as MALA 1.4.0 implements it:

    J[b, :] = d(sum of all outputs) / d x[b, :]     (one row per point b)
    C       = Pearson correlation matrix of the rows of J, clamped to [-1, 1]
    score   = sum_i [ log(lambda_i + k) + 1 / (lambda_i + k) ],  k = 1e-4

with lambda_i the eigenvalues of C. MALA keeps the candidate with the largest
score, which is the opposite of the choice in the paper. This module only
computes the value, and the caller decides the direction.

Example::

    score = naswot_score(network, scaled_inputs[:40])
"""

import math
from typing import Sequence

import torch

# Offset k added to every eigenvalue before log and reciprocal, so that
# eigenvalues rounded slightly below zero keep the logarithm defined. MALA 1.4.0
# uses 1e-4, and its source states that the reference code used 1e-5.
EIGENVALUE_OFFSET = 1e-4


class NaswotScoreError(RuntimeError):
    """Error for a network and batch that have no finite NASWOT score.

    Callers should record the candidate as a failed trial, because the cause
    lies in the candidate (for example, every ReLU unit is inactive for one
    point), not in the code.
    """


def constant_rows_error(rows: list[int]) -> NaswotScoreError:
    return NaswotScoreError(
        f"Jacobian rows {rows} are constant across the inputs, so their "
        "Pearson correlation is undefined (typical cause: every ReLU unit is "
        "inactive for these points); record the candidate as failed."
    )


NON_FINITE_MESSAGE = (
    "Jacobian correlation matrix contains NaN or inf (non-finite network "
    "gradients); record the candidate as failed."
)


def eigendecomposition_error(error: Exception) -> NaswotScoreError:
    return NaswotScoreError(f"eigendecomposition of the Jacobian correlation matrix failed: {error}")


def jacobian_rows(network: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Compute d(sum of outputs)/d(input) for every point of the batch.

    One forward and one backward pass serve the whole batch, which is exact
    only if the network maps each point independently (an MLP does, but
    batch normalization in training mode does not, so it is rejected). The
    gradient is taken with respect to the input alone, so the parameters and
    their ``.grad`` fields are left untouched.

    Args:
        network: Model that maps a (B, n_inputs) tensor to outputs of any shape.
        batch: Scaled inputs, shape (B, n_inputs), in the network's dtype.

    Returns:
        Detached tensor of shape (B, n_inputs) in the batch's dtype.
    """
    if batch.dim() != 2:
        raise ValueError(
            f"NASWOT batch must have shape (points, inputs), got shape {tuple(batch.shape)}; "
            "reshape the descriptors to two dimensions first."
        )
    if not batch.is_floating_point():
        raise ValueError(
            f"NASWOT batch must be a floating-point tensor, got dtype {batch.dtype}; "
            "convert it to the network's dtype."
        )
    for name, module in network.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.training:
            raise ValueError(
                f"module '{name}' ({type(module).__name__}) is in training mode and couples "
                "the points of a batch, so the per-point Jacobian is undefined; "
                "call network.eval() first."
            )

    # A clone, because inference-mode tensors cannot require gradients and the
    # caller's tensor must not be changed.
    inputs = batch.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        outputs = network(inputs)
        (gradient,) = torch.autograd.grad(outputs.sum(), inputs)
    return gradient.detach()


def correlation_matrix(rows: torch.Tensor) -> torch.Tensor:
    """Compute the Pearson correlation matrix of the rows, in float64.

    The result is clamped to [-1, 1] as ``numpy.corrcoef`` does. Float64
    matters because near-duplicate points (the Be2 batch of MALA's NASWOT test
    contains two points whose scaled descriptors differ by 5e-6) give an
    eigenvalue close to 0, which adds about 1/k = 1e4 to the score. In that
    test, float32 rounding of C moved such eigenvalues by up to about 1e-6 and
    the scores by up to 0.5 %.

    Raises:
        NaswotScoreError: if a row is constant, because its correlation with
            any other row is then undefined.
    """
    rows = rows.to(torch.float64)
    centered = rows - rows.mean(dim=1, keepdim=True)
    covariance = centered @ centered.T / (rows.shape[1] - 1)
    standard_deviation = covariance.diagonal().sqrt()

    constant_rows = torch.nonzero(standard_deviation == 0).flatten().tolist()
    if constant_rows:
        raise constant_rows_error(constant_rows)

    correlation = covariance / torch.outer(standard_deviation, standard_deviation)
    return correlation.clamp(-1.0, 1.0)


def surrogate_from_eigenvalues(eigenvalues: torch.Tensor) -> float:
    """Compute sum_i [log(lambda_i + k) + 1/(lambda_i + k)] with k = EIGENVALUE_OFFSET.

    Raises:
        NaswotScoreError: if the sum is not finite, e.g. when an eigenvalue is
            at or below -k.
    """
    shifted = eigenvalues.to(torch.float64) + EIGENVALUE_OFFSET
    score = float(torch.sum(torch.log(shifted) + 1.0 / shifted))
    if not math.isfinite(score):
        raise NaswotScoreError(
            f"NASWOT score is {score}: smallest eigenvalue {float(eigenvalues.min()):.3e} "
            f"is not above -{EIGENVALUE_OFFSET}; record the candidate as failed."
        )
    return score


def surrogate_from_jacobian(jacobian: torch.Tensor) -> float:
    """Compute the NASWOT score from Jacobian rows of shape (B, n_inputs).

    C is symmetric, so ``torch.linalg.eigvalsh`` is used. MALA 1.4.0 calls the
    general solver ``torch.linalg.eig`` and keeps the real parts. In float64
    both give the same score to about 1e-12 relative.

    Raises:
        NaswotScoreError: for a constant Jacobian row, a non-finite
            correlation, a failed eigendecomposition or a non-finite score.
    """
    if jacobian.dim() != 2 or jacobian.shape[0] < 2 or jacobian.shape[1] < 2:
        raise ValueError(
            f"Jacobian must have shape (points, inputs) with at least 2 of each, "
            f"got shape {tuple(jacobian.shape)}; pass a larger batch."
        )

    correlation = correlation_matrix(jacobian)
    if not bool(torch.isfinite(correlation).all()):
        raise NaswotScoreError(NON_FINITE_MESSAGE)

    try:
        eigenvalues = torch.linalg.eigvalsh(correlation)
    except torch.linalg.LinAlgError as error:
        raise eigendecomposition_error(error) from error

    return surrogate_from_eigenvalues(eigenvalues)


def naswot_score(network: torch.nn.Module, batch: torch.Tensor) -> float:
    """Compute the NASWOT score of an untrained network on one mini-batch.

    The network's parameters, gradients and training mode are not changed.
    MALA ranks a larger score as better.

    Args:
        network: Freshly initialized model that treats the points independently.
        batch: Scaled inputs, shape (B, n_inputs), with B >= 2.

    Raises:
        NaswotScoreError: if the score is not finite (see ``surrogate_from_jacobian``).
        ValueError: if the batch shape or dtype is invalid.
    """
    return surrogate_from_jacobian(jacobian_rows(network, batch))


# --- several candidates at once ---------------------------------------------


def stacked_mlp_jacobian_rows(
    groups: Sequence[Sequence[torch.nn.Linear]],
    activations: Sequence[Sequence[torch.nn.Module]],
    batches: torch.Tensor,
) -> torch.Tensor:
    """Compute the Jacobian rows of P MLPs in each of G groups; the networks of a group share their Linear layers.

    Network p of group g applies ``groups[g][i]`` and then ``activations[p][i]`` for
    each layer i; a list shorter than the depth leaves the last layers linear. Every
    group has the same depth, input width and output width, and its own batch
    ``batches[g]``. Hidden widths may differ between groups: each layer is zero-padded
    to the largest width, and a padded unit has no incoming or outgoing weight, so it
    adds exact zeros to the outputs and the Jacobian. The P copies of each batch are
    stacked, so one forward and one backward pass through batched matrix products
    serve all G * P networks. Each block of rows equals ``jacobian_rows`` of its
    network up to float rounding, because the products sum in another order
    (``tests/test_naswot_score.py`` checks the agreement).

    Returns:
        Detached tensor of shape (G, P, B, n_inputs).
    """
    count, points = len(activations), batches.shape[1]
    depth = len(groups[0])
    weights, biases = [], []
    for layer in range(depth):
        fan_in = max(group[layer].in_features for group in groups)
        fan_out = max(group[layer].out_features for group in groups)
        weight = batches.new_zeros(len(groups), fan_in, fan_out)
        bias = batches.new_zeros(len(groups), 1, fan_out)
        for index, group in enumerate(groups):
            linear = group[layer]
            weight[index, : linear.in_features, : linear.out_features] = linear.weight.detach().T
            bias[index, 0, : linear.out_features] = linear.bias.detach()
        weights.append(weight)
        biases.append(bias)

    inputs = batches.detach().repeat(1, count, 1).requires_grad_(True)
    with torch.enable_grad():
        hidden = inputs
        for layer in range(depth):
            hidden = torch.baddbmm(biases[layer], hidden, weights[layer])
            blocks = hidden.split(points, dim=1)
            hidden = torch.cat([
                functions[layer](block) if layer < len(functions) else block
                for block, functions in zip(blocks, activations)
            ], dim=1)
        (gradient,) = torch.autograd.grad(hidden.sum(), inputs)
    return gradient.detach().reshape(len(groups), count, points, -1)


def surrogates_from_jacobians(jacobians: torch.Tensor) -> list[float | NaswotScoreError]:
    """Compute the NASWOT score of each of P Jacobians of shape (P, B, n_inputs).

    The correlation matrices are computed as in ``surrogate_from_jacobian``, batched
    over P in float64. The score then comes from a Cholesky factor L of C + kI
    instead of the eigenvalues, because for the eigenvalues lambda_i of C

        sum_i log(lambda_i + k) = log det(C + kI) = 2 sum_j log L_jj
        sum_i 1 / (lambda_i + k) = trace((C + kI)^-1) = squared Frobenius norm of L^-1,

    and a batch of Cholesky factorizations took a third of the time of the batched
    eigenvalues for 512 matrices of 40 x 40. The scores agree with
    ``surrogate_from_jacobian`` to about 1e-12 relative. A matrix whose C + kI is not
    positive definite (an eigenvalue at or below -k), or whose score is not finite,
    goes through the eigenvalues, so it fails with the same error as there. A
    candidate without a finite score gets its ``NaswotScoreError`` in place of the
    score, and the other candidates are unaffected.
    """
    if jacobians.dim() != 3 or jacobians.shape[1] < 2 or jacobians.shape[2] < 2:
        raise ValueError(
            f"Jacobians must have shape (candidates, points, inputs) with at least 2 points and inputs, "
            f"got shape {tuple(jacobians.shape)}; pass a larger batch."
        )
    rows = jacobians.to(torch.float64)
    centered = rows - rows.mean(dim=2, keepdim=True)
    covariance = centered @ centered.transpose(1, 2) / (rows.shape[2] - 1)
    standard_deviation = covariance.diagonal(dim1=1, dim2=2).sqrt()
    correlation = covariance / (standard_deviation[:, :, None] * standard_deviation[:, None, :])
    correlation = correlation.clamp(-1.0, 1.0)

    results: list[float | NaswotScoreError] = [0.0] * rows.shape[0]
    valid = []
    # Flags of all candidates in two transfers: per-candidate tensor checks cost more than a score.
    constant = (standard_deviation == 0).tolist()
    finite = torch.isfinite(correlation).flatten(1).all(dim=1).tolist()
    for index in range(rows.shape[0]):
        if any(constant[index]):
            results[index] = constant_rows_error([row for row, flag in enumerate(constant[index]) if flag])
        elif not finite[index]:
            results[index] = NaswotScoreError(NON_FINITE_MESSAGE)
        else:
            valid.append(index)
    if not valid:
        return results

    identity = torch.eye(rows.shape[1], dtype=torch.float64, device=rows.device)
    factor, info = torch.linalg.cholesky_ex(correlation[valid] + EIGENVALUE_OFFSET * identity)
    log_determinant = 2.0 * torch.log(factor.diagonal(dim1=1, dim2=2)).sum(dim=1)
    inverse = torch.linalg.solve_triangular(factor, identity.expand_as(factor), upper=False)
    scores = (log_determinant + inverse.square().sum(dim=(1, 2))).tolist()
    for index, score, failed in zip(valid, scores, info.tolist()):
        if failed == 0 and math.isfinite(score):
            results[index] = score
            continue
        try:
            results[index] = surrogate_from_eigenvalues(torch.linalg.eigvalsh(correlation[index]))
        except torch.linalg.LinAlgError as error:
            results[index] = eigendecomposition_error(error)
        except NaswotScoreError as error:
            results[index] = error
    return results
