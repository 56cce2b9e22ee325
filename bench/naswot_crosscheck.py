"""Cross-check malahydra's NASWOT score against MALA 1.4.0 and time it.

Part 1 runs only where ``mala`` (materials-learning-algorithms 1.4.0) is
importable. It uses the candidates of MALA's own NASWOT test on Be2: layer
sizes [91, 100, 100, 11], ReLU or Sigmoid after each Linear layer, seed 1234
and batch size 40. For each candidate it evaluates MALA's ``ObjectiveNASWOT``,
then rebuilds the identical network and batch through MALA, and prints

- ``mala``: MALA's objective as a search calls it (float32 throughout);
- ``ours32``: ``naswot_score`` on the same float32 weights and batch;
- ``mala64`` and ``ours64``: MALA's score routine and ``naswot_score`` on the
  same network and batch converted to float64, where rounding no longer hides
  a difference in the formula.

Part 2 measures how many candidates per second ``naswot_score`` scores for
that network size, with and without building the network.

Run it with the interpreter that has MALA installed, from the repository root:

    /path/to/mala-venv/bin/python bench/naswot_crosscheck.py --data-dir /path/to/Be2
"""

import argparse
import itertools
import os
import time
from pathlib import Path

import torch

from malahydra.search.naswot_score import NaswotScoreError, naswot_score

SEED = 1234
LAYER_SIZES = (91, 100, 100, 11)
BATCH_SIZE = 40
CHOICES = ("ReLU", "Sigmoid")


def relative_difference(value, reference):
    return abs(value - reference) / abs(reference)


def build_mala_setup(data_dir):
    """Return MALA parameters and a data handler set up as in MALA's NASWOT test."""
    import mala

    parameters = mala.Parameters()
    parameters.verbosity = 0
    parameters.manual_seed = SEED
    parameters.data.data_splitting_type = "by_snapshot"
    parameters.data.input_rescaling_type = "feature-wise-standard"
    parameters.data.output_rescaling_type = "normal"
    parameters.running.mini_batch_size = BATCH_SIZE
    parameters.hyperparameters.hyper_opt_method = "naswot"

    data_handler = mala.DataHandler(parameters)
    data_handler.add_snapshot("Be_snapshot0.in.npy", str(data_dir), "Be_snapshot0.out.npy", str(data_dir), "tr")
    data_handler.add_snapshot("Be_snapshot1.in.npy", str(data_dir), "Be_snapshot1.out.npy", str(data_dir), "va")
    data_handler.prepare_data()

    parameters.network.layer_sizes = [data_handler.input_dimension, *LAYER_SIZES[1:-1], data_handler.output_dimension]
    optimizer = mala.HyperOptNASWOT(parameters, data_handler)
    for layer in range(len(LAYER_SIZES) - 1):
        optimizer.add_hyperparameter("categorical", f"layer_activation_{layer:02d}", choices=list(CHOICES))
    return parameters, data_handler


def rebuild_mala_candidate(parameters, data_handler):
    """Rebuild the network and batch that ObjectiveNASWOT just used.

    The objective seeds the global torch RNG inside ``mala.Network`` and then
    draws the first batch of a shuffled DataLoader, so repeating both calls
    in the same order reproduces weights and batch exactly.
    """
    import mala

    network = mala.Network(parameters)
    loader = torch.utils.data.DataLoader(data_handler.training_data_sets[0], batch_size=BATCH_SIZE, shuffle=True)
    batch, _ = next(iter(loader))
    return network, batch


def plain_copy(mala_network, activations):
    """Copy a MALA feed-forward network into a plain nn.Sequential with the same layer indices."""
    layers = []
    for i, activation in enumerate(activations):
        layers.append(torch.nn.Linear(LAYER_SIZES[i], LAYER_SIZES[i + 1]))
        layers.append(getattr(torch.nn, activation)())
    network = torch.nn.Sequential(*layers)
    state = {key.removeprefix("layers."): value for key, value in mala_network.state_dict().items()}
    network.load_state_dict(state)
    return network


def mala_score_routine(mala_network, batch):
    """Score with MALA's private Jacobian and score routines, which the objective calls."""
    from mala.network.objective_naswot import ObjectiveNASWOT

    # A fresh leaf, because MALA sets requires_grad on the batch tensor it is given.
    inputs = batch.detach().clone()
    jacobian = ObjectiveNASWOT._ObjectiveNASWOT__get_batch_jacobian(mala_network, [(inputs, None)], "cpu")
    # MALA returns the negated surrogate, because its optimizers minimize.
    return -float(ObjectiveNASWOT._ObjectiveNASWOT__calc_score(jacobian))


def crosscheck(data_dir):
    import optuna
    from mala.network.objective_naswot import ObjectiveNASWOT

    parameters, data_handler = build_mala_setup(data_dir)
    objective = ObjectiveNASWOT(parameters, data_handler, "optuna")

    print(f"{'candidate':9} {'mala':>14} {'ours32':>14} {'rel32':>9} {'mala64':>14} {'ours64':>14} {'rel64':>9}")
    worst32 = worst64 = 0.0
    for activations in itertools.product(CHOICES, repeat=len(LAYER_SIZES) - 1):
        trial = optuna.trial.FixedTrial({f"layer_activation_{i:02d}": a for i, a in enumerate(activations)})
        mala_value = float(objective(trial))

        mala_network, batch = rebuild_mala_candidate(parameters, data_handler)
        network = plain_copy(mala_network, activations)
        ours32 = naswot_score(network, batch)
        rebuilt_value = mala_score_routine(mala_network, batch)
        if rebuilt_value != mala_value:
            raise RuntimeError(
                f"rebuilt MALA candidate scores {rebuilt_value}, but the objective returned {mala_value}: "
                "weights or batch differ from the objective's, so the comparison is invalid."
            )

        mala64 = mala_score_routine(mala_network.double(), batch.double())
        ours64 = naswot_score(network.double(), batch.double())

        rel32 = relative_difference(ours32, mala_value)
        rel64 = relative_difference(ours64, mala64)
        worst32, worst64 = max(worst32, rel32), max(worst64, rel64)
        name = "".join(a[0] for a in activations)
        print(f"{name:9} {mala_value:14.4f} {ours32:14.4f} {rel32:9.2e} {mala64:14.4f} {ours64:14.4f} {rel64:9.2e}")
    print(f"max relative difference: float32 {worst32:.2e}, float64 {worst64:.2e}")


def make_network(activations):
    layers = []
    for i, activation in enumerate(activations):
        layers.append(torch.nn.Linear(LAYER_SIZES[i], LAYER_SIZES[i + 1]))
        layers.append(getattr(torch.nn, activation)())
    return torch.nn.Sequential(*layers)


def timed_scores(make_candidate, batch, repeats):
    """Return candidates per second and the number of NaswotScoreError failures."""
    failures = 0
    start = time.perf_counter()
    for i in range(repeats):
        try:
            naswot_score(make_candidate(i), batch)
        except NaswotScoreError:
            failures += 1
    return repeats / (time.perf_counter() - start), failures


def measure_throughput(repeats):
    """Print candidates per second for the score alone and for build plus score.

    Candidates whose score fails (an all-ReLU network can have a point where
    every output unit is inactive) are counted, because a search meets them too.
    """
    torch.manual_seed(SEED)
    batch = torch.randn(BATCH_SIZE, LAYER_SIZES[0])
    candidates = list(itertools.product(CHOICES, repeat=len(LAYER_SIZES) - 1))
    networks = [make_network(activations) for activations in candidates]
    timed_scores(lambda i: networks[i], batch, len(networks))  # warm-up

    score_only, score_only_failures = timed_scores(lambda i: networks[i % len(networks)], batch, repeats)
    with_build, with_build_failures = timed_scores(
        lambda i: make_network(candidates[i % len(candidates)]), batch, repeats
    )

    print(
        f"throughput, {torch.get_num_threads()} torch threads, batch {BATCH_SIZE}, layers {list(LAYER_SIZES)}: "
        f"{score_only:.0f} candidates/s score only ({score_only_failures}/{repeats} failed), "
        f"{with_build:.0f} candidates/s build + score ({with_build_failures}/{repeats} failed)"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("MALAHYDRA_DATA_DIR", "/work/shared/data/Be2")),
        help="folder with Be_snapshot0/1 .in.npy and .out.npy (default: $MALAHYDRA_DATA_DIR or /work/shared/data/Be2)",
    )
    parser.add_argument("--repeats", type=int, default=2000, help="scored candidates per timing run")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time")
    arguments = parser.parse_args()

    try:
        import mala  # noqa: F401
    except ImportError:
        print("mala is not importable: skipping the cross-check, timing only.")
    else:
        crosscheck(arguments.data_dir)

    for threads in arguments.threads:
        torch.set_num_threads(threads)
        measure_throughput(arguments.repeats)


if __name__ == "__main__":
    main()
