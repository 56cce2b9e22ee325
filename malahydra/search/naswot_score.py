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
        raise NaswotScoreError(
            f"Jacobian rows {constant_rows} are constant across the inputs, so their "
            "Pearson correlation is undefined (typical cause: every ReLU unit is "
            "inactive for these points); record the candidate as failed."
        )

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
        raise NaswotScoreError(
            "Jacobian correlation matrix contains NaN or inf (non-finite network "
            "gradients); record the candidate as failed."
        )

    try:
        eigenvalues = torch.linalg.eigvalsh(correlation)
    except torch.linalg.LinAlgError as error:
        raise NaswotScoreError(
            f"eigendecomposition of the Jacobian correlation matrix failed: {error}"
        ) from error

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
