"""Tests of the NASWOT score against a NumPy reference and MALA's published values."""

import itertools
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from malahydra.search.naswot_score import (
    EIGENVALUE_OFFSET,
    NaswotScoreError,
    correlation_matrix,
    jacobian_rows,
    naswot_score,
    stacked_mlp_jacobian_rows,
    surrogate_from_jacobian,
    surrogates_from_jacobians,
)

ACTIVATIONS = {
    "ReLU": torch.nn.ReLU,
    "Sigmoid": torch.nn.Sigmoid,
    "LeakyReLU": torch.nn.LeakyReLU,
    "Tanh": torch.nn.Tanh,
}
LEAKY_RELU_SLOPE = 0.01  # torch.nn.LeakyReLU default


# --- NumPy reference, independent of the torch code under test -------------


def numpy_activation(name, z):
    """Return the activation and its derivative at z."""
    if name == "ReLU":
        return np.maximum(z, 0.0), (z > 0).astype(float)
    if name == "LeakyReLU":
        return np.where(z > 0, z, LEAKY_RELU_SLOPE * z), np.where(z > 0, 1.0, LEAKY_RELU_SLOPE)
    if name == "Sigmoid":
        s = 1.0 / (1.0 + np.exp(-z))
        return s, s * (1.0 - s)
    if name == "Tanh":
        t = np.tanh(z)
        return t, 1.0 - t * t
    raise KeyError(name)


def numpy_forward(weights, activation, x):
    """Forward pass of Linear-activation-Linear-activation, float64."""
    (w1, b1), (w2, b2) = weights
    hidden, _ = numpy_activation(activation, x @ w1.T + b1)
    output, _ = numpy_activation(activation, hidden @ w2.T + b2)
    return output


def numpy_jacobian(weights, activation, x):
    """Gradient of the summed outputs with respect to each input row, by explicit backpropagation."""
    (w1, b1), (w2, b2) = weights
    hidden, hidden_slope = numpy_activation(activation, x @ w1.T + b1)
    _, output_slope = numpy_activation(activation, hidden @ w2.T + b2)
    hidden_gradient = (output_slope @ w2) * hidden_slope
    return hidden_gradient @ w1


def numpy_naswot(jacobian):
    correlation = np.corrcoef(jacobian)  # rows are the variables, values clipped to [-1, 1]
    eigenvalues = np.linalg.eigvals(correlation).real  # general solver, as in MALA
    shifted = eigenvalues + EIGENVALUE_OFFSET
    return float(np.sum(np.log(shifted) + 1.0 / shifted))


def make_mlp(activation, sizes=(20, 24, 3), seed=7):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(sizes[0], sizes[1]),
        ACTIVATIONS[activation](),
        torch.nn.Linear(sizes[1], sizes[2]),
        ACTIVATIONS[activation](),
    )


def numpy_weights(network):
    linears = [m for m in network if isinstance(m, torch.nn.Linear)]
    return [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy()) for m in linears]


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(11)
    return torch.randn(12, 20, generator=generator, dtype=torch.float64)


def test_numpy_jacobian_matches_finite_differences(batch):
    weights = numpy_weights(make_mlp("Tanh").double())
    x = batch.numpy()
    step = 1e-6
    finite_difference = np.empty_like(x)
    for i in range(x.shape[1]):
        shift = np.zeros_like(x)
        shift[:, i] = step
        upper = numpy_forward(weights, "Tanh", x + shift).sum(axis=1)
        lower = numpy_forward(weights, "Tanh", x - shift).sum(axis=1)
        finite_difference[:, i] = (upper - lower) / (2 * step)

    np.testing.assert_allclose(numpy_jacobian(weights, "Tanh", x), finite_difference, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_score_matches_numpy_reference(activation, batch):
    network = make_mlp(activation).double()
    expected = numpy_naswot(numpy_jacobian(numpy_weights(network), activation, batch.numpy()))

    assert naswot_score(network, batch) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_score_float32_network_is_finite(activation, batch):
    score = naswot_score(make_mlp(activation), batch.float())

    assert np.isfinite(score)


def test_eigvalsh_matches_general_solver(batch):
    correlation = correlation_matrix(jacobian_rows(make_mlp("Sigmoid").double(), batch))
    general = torch.linalg.eigvals(correlation).real
    symmetric = torch.linalg.eigvalsh(correlation)

    torch.testing.assert_close(general.sort().values, symmetric, rtol=0, atol=1e-12)


def test_score_leaves_parameters_untouched(batch):
    network = make_mlp("ReLU").double()
    before = {name: value.clone() for name, value in network.state_dict().items()}

    naswot_score(network, batch)

    for name, value in network.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(parameter.grad is None for parameter in network.parameters())


def test_score_works_under_no_grad(batch):
    network = make_mlp("Tanh").double()
    expected = naswot_score(network, batch)

    with torch.no_grad():
        assert naswot_score(network, batch) == expected


def test_constant_jacobian_row_raises():
    jacobian = torch.randn(6, 10, dtype=torch.float64)
    jacobian[3] = 0.5

    with pytest.raises(NaswotScoreError, match=r"rows \[3\] are constant"):
        surrogate_from_jacobian(jacobian)


def test_dead_relu_network_raises(batch):
    network = make_mlp("ReLU").double()
    with torch.no_grad():
        network[0].bias.fill_(-1e3)  # every hidden unit inactive, so the Jacobian is zero

    with pytest.raises(NaswotScoreError, match="constant"):
        naswot_score(network, batch)


def test_non_finite_jacobian_raises():
    jacobian = torch.randn(6, 10, dtype=torch.float64)
    jacobian[2, 4] = float("inf")

    with pytest.raises(NaswotScoreError):
        surrogate_from_jacobian(jacobian)


def test_batch_of_wrong_rank_raises():
    with pytest.raises(ValueError, match="shape"):
        naswot_score(make_mlp("ReLU"), torch.zeros(2, 3, 20))


def test_single_point_batch_raises():
    with pytest.raises(ValueError, match="at least 2"):
        naswot_score(make_mlp("ReLU"), torch.zeros(1, 20))


def test_batchnorm_in_training_mode_raises(batch):
    network = torch.nn.Sequential(torch.nn.Linear(20, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh()).double()

    with pytest.raises(ValueError, match="eval"):
        naswot_score(network, batch)


# --- MALA 1.4.0 reference values on Be2 -------------------------------------

# Surrogate values that MALA's own NASWOT test (manual_seed 1234, layer sizes
# [91, 100, 100, 11], batch size 40) pins for the activation triples in
# itertools.product(["ReLU", "Sigmoid"], repeat=3) order.
MALA_PINNED_SCORES = {
    ("ReLU", "ReLU", "ReLU"): 10569.71875,
    ("ReLU", "ReLU", "Sigmoid"): 10649.0361328125,
    ("ReLU", "Sigmoid", "ReLU"): 12081.2958984375,
    ("ReLU", "Sigmoid", "Sigmoid"): 12360.3701171875,
    ("Sigmoid", "ReLU", "ReLU"): 33523.9375,
    ("Sigmoid", "ReLU", "Sigmoid"): 47565.8203125,
    ("Sigmoid", "Sigmoid", "ReLU"): 149152.921875,
    ("Sigmoid", "Sigmoid", "Sigmoid"): 150312.671875,
}
# MALA's test accepts 1 % because the pinned values come from a float32
# eigensolver, whose rounding moves near-zero eigenvalues.
MALA_RELATIVE_TOLERANCE = 1e-2
MALA_SEED = 1234
MALA_LAYER_SIZES = (91, 100, 100, 11)
MALA_BATCH_SIZE = 40
GRID_INDEX_COLUMNS = 3


@pytest.fixture(scope="module")
def be2_training_inputs(be2_dir):
    path = be2_dir / "Be_snapshot0.in.npy"
    descriptors = np.load(path)[..., GRID_INDEX_COLUMNS:]
    inputs = torch.from_numpy(descriptors.reshape(-1, descriptors.shape[-1]).astype(np.float32))
    # Feature-wise standard scaling fitted on this snapshot, in float32 with the
    # unbiased standard deviation, as MALA's "feature-wise-standard" does.
    return (inputs - inputs.mean(dim=0, keepdim=True)) / inputs.std(dim=0, keepdim=True)


def mala_candidate(activations, inputs):
    """Build a candidate and its batch the way MALA 1.4.0 does for one trial.

    MALA seeds the global torch RNG when it builds each network, creates the
    Linear layers in input-to-output order with torch's default init, and
    then draws the first mini-batch of a shuffled DataLoader from the same RNG.
    """
    torch.manual_seed(MALA_SEED)
    layers = []
    for i, activation in enumerate(activations):
        layers.append(torch.nn.Linear(MALA_LAYER_SIZES[i], MALA_LAYER_SIZES[i + 1]))
        layers.append(ACTIVATIONS[activation]())
    network = torch.nn.Sequential(*layers)

    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(inputs), batch_size=MALA_BATCH_SIZE, shuffle=True
    )
    (batch,) = next(iter(loader))
    return network, batch


@pytest.fixture(scope="module")
def be2_scores(be2_training_inputs):
    scores = {}
    for activations in itertools.product(["ReLU", "Sigmoid"], repeat=3):
        network, batch = mala_candidate(activations, be2_training_inputs)
        scores[activations] = naswot_score(network, batch)
    return scores


@pytest.mark.parametrize("activations", list(MALA_PINNED_SCORES), ids=lambda a: "".join(n[0] for n in a))
def test_be2_score_matches_mala(activations, be2_scores):
    assert be2_scores[activations] == pytest.approx(
        MALA_PINNED_SCORES[activations], rel=MALA_RELATIVE_TOLERANCE
    )


def test_be2_ranking_matches_mala(be2_scores):
    expected_order = sorted(MALA_PINNED_SCORES, key=MALA_PINNED_SCORES.get)

    assert sorted(be2_scores, key=be2_scores.get) == expected_order


def test_be2_all_sigmoid_scores_largest(be2_scores):
    assert max(be2_scores, key=be2_scores.get) == ("Sigmoid", "Sigmoid", "Sigmoid")


# --- candidates scored in groups against one by one -------------------------

GROUPED_WIDTHS = ([1], [30, 10], [10, 0])
GROUPED_ACTIVATIONS = ("ReLU", "Sigmoid", "Tanh")
GROUPED_OUTPUTS = (None, "ReLU")


def mixed_candidates():
    """Feed-forward candidates in groups of equal widths, plus ones outside any group."""
    candidates = []
    for widths, activation, output in itertools.product(GROUPED_WIDTHS, GROUPED_ACTIVATIONS, GROUPED_OUTPUTS):
        params = {"model.hidden_widths": widths, "model.activations": [activation], "model.output_activation": output}
        candidates.append({"number": len(candidates), "params": params})
    # Softsign is not batchable, so it takes the one-by-one path; three activations for
    # two hidden layers is a config error of that candidate alone.
    for activations in (["Softsign"], ["ReLU", "Tanh", "Sigmoid"]):
        params = {"model.hidden_widths": [30, 10], "model.activations": activations, "model.output_activation": None}
        candidates.append({"number": len(candidates), "params": params})
    return candidates


# Relative tolerance between scores of the same network and batch whose float32 operations
# run in another order (grouped or alone, rows permuted). Up to 3e-7 was seen on an AMD EPYC CPU.
FLOAT32_ORDER_REL = 1e-5


def test_grouped_scores_match_one_by_one(make_config):
    from malahydra.search import naswot_job

    cfg = make_config("training.seed=1234")
    candidates = mixed_candidates()
    sections = {name: OmegaConf.to_container(cfg[name], resolve=True) for name in naswot_job.SCORING_SECTIONS}
    seeds = [1234, naswot_job.derived_seed(1234, 1)]

    entries = naswot_job.score_candidates(cfg, candidates, repeats=2)

    assert len({naswot_job.group_key(*naswot_job.candidate_sections(cfg, c["params"], sections)) for c in candidates}) == 4
    for candidate, entry in zip(candidates, entries):
        model, data = naswot_job.candidate_sections(cfg, candidate["params"], sections)
        split = naswot_job.cached_split(data)
        for repeat, seed in enumerate(seeds):
            expected = naswot_job.score_one(model, split, 40, seed, torch.device("cpu"))
            if isinstance(expected, Exception):
                assert entry["values"][repeat] is None, candidate
                assert entry["reasons"][repeat] == f"{type(expected).__name__}: {expected}"
            else:
                assert entry["reasons"][repeat] is None, candidate
                assert entry["values"][repeat] == pytest.approx(expected, rel=FLOAT32_ORDER_REL, abs=0), candidate


def error_names(entry: dict) -> list[str | None]:
    return [reason.split(":")[0] if reason else None for reason in entry["reasons"]]


def test_lazy_loading_scores_match_preloaded(make_config):
    from malahydra.search import naswot_job

    candidates = mixed_candidates()
    preloaded = naswot_job.score_candidates(make_config("training.seed=1234"), candidates, repeats=1)
    lazy_config = make_config("training.seed=1234", "+data.lazy_loading=true")
    lazy = naswot_job.score_candidates(lazy_config, candidates, repeats=1)

    # The scores read their batches from the files: nothing was preloaded.
    assert naswot_job.cached_split(OmegaConf.to_container(lazy_config.data, resolve=True)).tensors == {}

    # The same candidates fail with the same error. Their messages list Jacobian rows, which
    # the lazy batch orders otherwise.
    assert [error_names(entry) for entry in lazy] == [error_names(entry) for entry in preloaded]
    for candidate, lazy_entry, preloaded_entry in zip(candidates, lazy, preloaded):
        if preloaded_entry["values"][0] is not None:
            assert lazy_entry["values"][0] == pytest.approx(preloaded_entry["values"][0], rel=FLOAT32_ORDER_REL), candidate
    assert sum(entry["values"][0] is not None for entry in lazy) >= 10


def test_grouped_scores_fail_alone(make_config):
    from malahydra.search import naswot_job

    entries = naswot_job.score_candidates(make_config("training.seed=1234"), mixed_candidates(), repeats=1)
    by_params = {(tuple(c["params"]["model.hidden_widths"]), tuple(c["params"]["model.activations"]),
                  c["params"]["model.output_activation"]): e for c, e in zip(mixed_candidates(), entries)}

    dead = by_params[((1,), ("ReLU",), None)]
    assert dead["values"] == [None]
    assert "NaswotScoreError: Jacobian rows" in dead["reasons"][0]
    assert math.isfinite(by_params[((1,), ("Sigmoid",), None)]["values"][0])
    assert math.isfinite(by_params[((30, 10), ("Softsign",), None)]["values"][0])
    assert "ConfigurationError" in by_params[((30, 10), ("ReLU", "Tanh", "Sigmoid"), None)]["reasons"][0]


def test_stacked_mlp_rows_match_per_network(batch):
    # Three groups with other hidden widths, so the stacked pass pads them to 16 and 9.
    torch.manual_seed(3)
    groups = [[torch.nn.Linear(20, n_1), torch.nn.Linear(n_1, n_2), torch.nn.Linear(n_2, 3)]
              for n_1, n_2 in ((16, 9), (5, 9), (12, 2))]
    patterns = [[ACTIVATIONS[a](), ACTIVATIONS[b]()] for a, b in itertools.product(sorted(ACTIVATIONS), repeat=2)]
    patterns.append([torch.nn.Tanh()])  # linear last two layers
    batches = torch.stack([batch.float(), batch.float().flip(0), batch.float() * 0.5])

    stacked = stacked_mlp_jacobian_rows(groups, patterns, batches)

    assert stacked.shape == (3, len(patterns), batch.shape[0], batch.shape[1])
    for linears, inputs, group_rows in zip(groups, batches, stacked):
        for rows, pattern in zip(group_rows, patterns):
            layers = [linears[0], pattern[0], linears[1], *pattern[1:2], linears[2]]
            expected = jacobian_rows(torch.nn.Sequential(*layers), inputs)
            torch.testing.assert_close(rows, expected, rtol=1e-5, atol=1e-6)


def test_batched_surrogates_match_single():
    generator = torch.Generator().manual_seed(5)
    jacobians = torch.randn(4, 12, 20, generator=generator, dtype=torch.float64)
    jacobians[1, 7] = 0.25  # constant row: only candidate 1 fails
    jacobians[2, 0, 3] = float("nan")

    results = surrogates_from_jacobians(jacobians)

    assert results[0] == pytest.approx(surrogate_from_jacobian(jacobians[0]), rel=1e-12)
    assert results[3] == pytest.approx(surrogate_from_jacobian(jacobians[3]), rel=1e-12)
    assert isinstance(results[1], NaswotScoreError)
    assert "rows [7] are constant" in str(results[1])
    assert isinstance(results[2], NaswotScoreError)


@pytest.mark.parametrize("count, batch_size, seed", [(97, 10, 0), (5832, 40, 1234), (40, 40, 7), (3, 8, 99)])
def test_fast_first_batch_matches_dataloader(count, batch_size, seed):
    from malahydra.search import naswot_job

    torch.manual_seed(seed)
    expected = naswot_job.dataloader_first_batch(count, batch_size)
    expected_next = torch.rand(3)
    torch.manual_seed(seed)
    fast = naswot_job.sampler_first_batch(count, batch_size)
    fast_next = torch.rand(3)

    assert naswot_job.sampler_matches_dataloader()
    assert torch.equal(fast, expected)
    assert torch.equal(fast_next, expected_next)


def test_dataloader_check_keeps_rng_state():
    from malahydra.search import naswot_job

    naswot_job.sampler_matches_dataloader.cache_clear()
    torch.manual_seed(11)
    expected = torch.rand(4)
    torch.manual_seed(11)
    naswot_job.sampler_matches_dataloader()

    assert torch.equal(torch.rand(4), expected)


def test_batched_surrogates_rank_deficient_match_eigenvalues():
    # 30 points and 6 inputs: C has rank 6, so 24 eigenvalues are (rounded) zeros and
    # each adds about 1/k to the score.
    generator = torch.Generator().manual_seed(8)
    jacobians = torch.randn(5, 30, 6, generator=generator, dtype=torch.float64)

    results = surrogates_from_jacobians(jacobians)

    for jacobian, result in zip(jacobians, results):
        assert result == pytest.approx(surrogate_from_jacobian(jacobian), rel=1e-9)


def test_batched_surrogates_failed_cholesky_uses_eigenvalues(monkeypatch):
    # Every correlation matrix is positive semidefinite, so only rounding can make a
    # Cholesky factorization of C + kI fail; the failure is injected here.
    generator = torch.Generator().manual_seed(9)
    jacobians = torch.randn(3, 12, 20, generator=generator, dtype=torch.float64)
    factorize = torch.linalg.cholesky_ex

    def failing_second(matrices):
        factor, info = factorize(matrices)
        info[1] = 1
        factor[1] = float("nan")
        return factor, info

    monkeypatch.setattr(torch.linalg, "cholesky_ex", failing_second)
    results = surrogates_from_jacobians(jacobians)

    for jacobian, result in zip(jacobians, results):
        assert result == pytest.approx(surrogate_from_jacobian(jacobian), rel=1e-12)
