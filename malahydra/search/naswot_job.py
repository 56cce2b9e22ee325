"""NASWOT scoring job: one Hydra job of `train.py` scores a chunk of candidates.

The NASWOT method of the sweeper launches this job with

    +trial.mode=naswot
    +trial.candidates_file=<job dir>/naswot_candidates.json
    +trial.repeats=1

where the file contains `{"candidates": [{"number": 3, "params": {"model.activations.0":
"ReLU", ...}}, ...]}` with trial numbers and override keys. `run_training` of
`malahydra.training.run` dispatches such a job here instead of training. The job loads the training data once, scores every candidate and writes `SCORES_FILE` into its
output directory, where the driver reads one entry per candidate.

Each score follows MALA 1.4.0's NASWOT. The job seeds the global torch RNG and builds
the network (layers in input-to-output order, torch's default initialization). It then
draws the batch from the same RNG, as the first mini-batch of a shuffled DataLoader over
the scaled training inputs. Repeat r > 0 uses the seed `derived_seed(training.seed, r)`, so repeats
differ in both initialization and batch, and every candidate sees the same seeds.

Because activations draw nothing from the RNG, candidates that differ only in their
activations get the same weights and the same batch. The job therefore builds the Linear
layers and draws the batch once per such group (`prepare_group`). Groups of equal depth
and equal activation patterns then get their Jacobians from one batched pass with
zero-padded widths (`stacked_mlp_jacobian_rows`), and the scores of all candidates come
from one batched factorization. Other candidates (another model name, an activation that
is not in `BATCHABLE_ACTIVATIONS`) are scored one by one by `score_network`, the reference.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from malahydra.data.dataset import DataSplit, load_split, training_inputs
from malahydra.errors import ConfigurationError, MalahydraError
from malahydra.model.network import hidden_activations, layer_widths, make_activation, network_from_config
from malahydra.training.devices import select_device

from .methods import derived_seed
from .naswot_score import NaswotScoreError, naswot_score, stacked_mlp_jacobian_rows, surrogates_from_jacobians

log = logging.getLogger(__name__)

CANDIDATES_FILE = "naswot_candidates.json"
SCORES_FILE = "naswot_scores.json"
# Config sections that determine a candidate's score: the network and its input data.
SCORING_SECTIONS = ("model", "data")

# Scaled training data of the last data configs, so that the in-process launcher loads
# the snapshots once per sweep instead of once per job. Keyed by the data config as YAML.
_SPLITS: dict[str, DataSplit] = {}
_MAX_CACHED_SPLITS = 2

# Activations without parameters or random draws, which `stacked_mlp_jacobian_rows` may swap on shared
# Linear layers. Any other torch.nn class name takes the one-by-one path.
BATCHABLE_ACTIVATIONS = frozenset({"ReLU", "LeakyReLU", "Sigmoid", "Tanh", "ELU", "GELU", "SiLU", "Softplus", "Identity"})
# Model keys that `network_from_config` reads; the activations are the ones a group varies.
ACTIVATION_KEYS = ("activations", "output_activation")
NO_ACTIVATION = (None, "", "null", "None")


def run_naswot_job(cfg: DictConfig) -> float:
    """Score the candidates of `cfg.trial.candidates_file`, write `SCORES_FILE`; return the count of finite scores."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_config = HydraConfig.get()
    output_dir = Path(hydra_config.runtime.output_dir)
    job_index = hydra_config.job.num if hydra_config.mode == RunMode.MULTIRUN else None
    candidates = json.loads(Path(str(cfg.trial.candidates_file)).read_text())["candidates"]
    repeats = int(cfg.trial.get("repeats", 1))
    log.info("Scoring %d candidate(s), %d repeat(s) each.", len(candidates), repeats)

    # One NASWOT score is a few small matrix products, for which torch's thread pool costs
    # more than it gains: on a loaded 2-core machine one score took 0.4 ms with 1 thread and
    # 19 ms with 2. The previous count is restored for trainings in the same process.
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(cfg.training.get("num_threads") or 1))
    try:
        entries = score_candidates(cfg, candidates, repeats, job_index)
    finally:
        torch.set_num_threads(previous_threads)
    temporary = output_dir / f".{SCORES_FILE}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps({"candidates": entries}))
    os.replace(temporary, output_dir / SCORES_FILE)

    scored = sum(all(v is not None for v in e["values"]) for e in entries)
    log.info("Scored %d of %d candidates (%d repeat(s) each).", scored, len(entries), repeats)
    return float(scored)


def score_candidates(
    cfg: DictConfig, candidates: list[dict], repeats: int, job_index: int | None = None
) -> list[dict[str, Any]]:
    """Score each candidate `repeats` times; return one entry per candidate, in input order.

    An entry contains `number`, `seeds`, `values` (a float or None per repeat) and
    `reasons` (None or the error per repeat). A candidate whose config is invalid or whose
    score is not finite gets None with the reason; the other candidates are still scored.
    """
    device = select_device(str(cfg.training.get("device", "auto")), job_index=job_index)
    base_seed = int(cfg.training.seed)
    seeds = [base_seed] + [derived_seed(base_seed, repeat) for repeat in range(1, repeats)]
    batch_size = int(cfg.training.mini_batch_size)

    sections = {name: OmegaConf.to_container(cfg[name], resolve=True) for name in SCORING_SECTIONS}

    entries = []
    # The split of the candidates whose params leave the data section as it is.
    shared_split: DataSplit | None = None
    groups: dict[str | None, list[tuple[dict, dict, DataSplit]]] = {}
    for candidate in candidates:
        entry: dict[str, Any] = {"number": int(candidate["number"]), "seeds": seeds,
                                 "values": [None] * repeats, "reasons": [None] * repeats}
        entries.append(entry)
        try:
            model, data = candidate_sections(cfg, candidate["params"], sections)
            if data is not sections["data"]:
                split = cached_split(data)
            elif shared_split is None:
                split = shared_split = cached_split(data)
            else:
                split = shared_split
        except MalahydraError as error:
            entry["reasons"] = [f"{type(error).__name__}: {error}"] * repeats
            continue
        groups.setdefault(group_key(model, data), []).append((entry, model, split))

    for repeat, seed in enumerate(seeds):
        score_repeat(groups, repeat, seed, batch_size, device)
    return entries


def score_repeat(
    groups: dict[str | None, list[tuple[dict, dict, DataSplit]]], repeat: int, seed: int, batch_size: int,
    device: torch.device,
) -> None:
    """Score repeat `repeat` of every candidate of `groups` (see `group_key`) into its entry."""
    # The Jacobians of all candidates are scored together, because one batched
    # factorization costs less than one per group.
    pending: list[tuple[dict, torch.Tensor]] = []
    buckets: dict[tuple, list[tuple[list[dict], GroupSetup]]] = {}
    for key, members in groups.items():
        if key is None:
            for entry, model, split in members:
                record_outcome(entry, repeat, score_one(model, split, batch_size, seed, device))
            continue
        setup = prepare_group([model for _, model, _ in members], members[0][2], batch_size, seed, device)
        valid = []
        for (entry, _, _), pattern in zip(members, setup.patterns):
            if isinstance(pattern, Exception):
                record_outcome(entry, repeat, pattern)
            else:
                valid.append(entry)
        if valid:
            buckets.setdefault(setup.bucket_key(), []).append((valid, setup))

    for bucket in buckets.values():
        patterns = [[shared_activation(name) for name in names] for names in bucket[0][1].valid_patterns()]
        jacobians = stacked_mlp_jacobian_rows([setup.linears for _, setup in bucket], patterns,
                                              torch.stack([setup.batch for _, setup in bucket]))
        for (valid, _), group_jacobians in zip(bucket, jacobians):
            pending.extend(zip(valid, group_jacobians))
    if pending:
        scores = surrogates_from_jacobians(torch.stack([jacobian for _, jacobian in pending]))
        for (entry, _), outcome in zip(pending, scores):
            record_outcome(entry, repeat, outcome)


def record_outcome(entry: dict[str, Any], repeat: int, outcome: float | Exception) -> None:
    if isinstance(outcome, Exception):
        entry["reasons"][repeat] = f"{type(outcome).__name__}: {outcome}"
    else:
        entry["values"][repeat] = outcome


def group_key(model: dict, data: dict) -> str | None:
    """Key shared by candidates that differ only in activations, or None for the one-by-one path."""
    if model.get("name", "feedforward") != "feedforward":
        return None
    names = [str(name) for name in model.get("activations") or []]
    output = model.get("output_activation")
    if output not in NO_ACTIVATION:
        names.append(str(output))
    if not set(names) <= BATCHABLE_ACTIVATIONS:
        return None
    rest = {key: value for key, value in model.items() if key not in ACTIVATION_KEYS}
    return json.dumps([rest, data], sort_keys=True, default=str)


def score_one(model: dict, split: DataSplit, batch_size: int, seed: int, device: torch.device) -> float | Exception:
    try:
        return score_network(OmegaConf.create(model), split, batch_size, seed, device)
    except (NaswotScoreError, MalahydraError) as error:
        return error


def score_network(model_cfg: DictConfig, split: DataSplit, batch_size: int, seed: int, device: torch.device) -> float:
    """Build the candidate's network from `seed` and score it on the first shuffled mini-batch."""
    torch.manual_seed(seed)
    network = network_from_config(model_cfg, split.input_width, split.output_width).to(device)
    score = naswot_score(network, first_batch(split, batch_size, device))
    if not math.isfinite(score):
        raise NaswotScoreError(f"NASWOT score is {score}; record the candidate as failed.")
    return score


@dataclass
class GroupSetup:
    """The shared Linear layers and batch of candidates that differ only in activations.

    `patterns` has one entry per candidate: its activation names, one per layer, or
    the configuration error that `score_network` would raise for it.
    """

    linears: list[torch.nn.Linear]
    batch: torch.Tensor
    patterns: list[tuple[str, ...] | Exception]

    def valid_patterns(self) -> tuple[tuple[str, ...], ...]:
        return tuple(pattern for pattern in self.patterns if not isinstance(pattern, Exception))

    def bucket_key(self) -> tuple:
        """Groups with equal keys are computed together by `stacked_mlp_jacobian_rows`."""
        return len(self.linears), self.valid_patterns(), tuple(self.batch.shape), str(self.batch.device)


def prepare_group(models: list[dict], split: DataSplit, batch_size: int, seed: int, device: torch.device) -> GroupSetup:
    """Build the Linear layers and draw the batch of a group from `seed`, as `score_network` does for each member.

    The layers are created in the same order from the same seed and the batch is drawn
    after them, so weights and batch equal those of `score_network`.
    """
    try:
        widths = layer_widths(split.input_width, list(models[0]["hidden_widths"]), split.output_width)
    except MalahydraError as error:
        return GroupSetup([], torch.empty(0, split.input_width), [error] * len(models))
    # Only the CPU generator is seeded, because torch.manual_seed also queues seeds for the
    # CUDA, XPU and MTIA generators. That took longer than a score, and nothing here draws from them.
    torch.default_generator.manual_seed(seed)
    linears = [torch.nn.Linear(n_in, n_out) for n_in, n_out in zip(widths[:-1], widths[1:])]
    if device.type != "cpu":
        linears = [linear.to(device) for linear in linears]
    batch = first_batch(split, batch_size, device)

    patterns: list[tuple[str, ...] | Exception] = []
    for model in models:
        try:
            names = hidden_activations(list(model["hidden_widths"]), list(model["activations"]))
        except MalahydraError as error:
            patterns.append(error)
            continue
        if model.get("output_activation") not in NO_ACTIVATION:
            names.append(str(model["output_activation"]))
        patterns.append(tuple(names))
    return GroupSetup(linears, batch, patterns)


@functools.cache
def shared_activation(name: str) -> torch.nn.Module:
    """Return one module per activation name, built once per process instead of once per candidate.

    Sharing is safe because the activations of a group have no parameters and no state.
    """
    return make_activation(name)


def first_batch(split: DataSplit, batch_size: int, device: torch.device) -> torch.Tensor:
    """Return the scaled inputs of the first shuffled training mini-batch, drawn from the global RNG, on `device`."""
    return training_inputs(split, first_shuffled_batch(split.training_points, batch_size)).to(device)


def first_shuffled_batch(count: int, batch_size: int) -> torch.Tensor:
    """Return the indices of the first mini-batch of a shuffled DataLoader over `count` points.

    The DataLoader draws its shuffling seed from the global RNG, as MALA's does. Shuffling
    an index range consumes the RNG exactly as shuffling the inputs themselves, because
    the sampler depends only on the length. `sampler_first_batch` makes the DataLoader's
    draws without building one, in a sixth of the time; where its result differs from a
    DataLoader's (checked once per process), the DataLoader is used.
    """
    if sampler_matches_dataloader():
        return sampler_first_batch(count, batch_size)
    return dataloader_first_batch(count, batch_size)


def dataloader_first_batch(count: int, batch_size: int) -> torch.Tensor:
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.arange(count)), batch_size=batch_size, shuffle=True
    )
    (indices,) = next(iter(loader))
    return indices


def sampler_first_batch(count: int, batch_size: int) -> torch.Tensor:
    """Draw the batch of `dataloader_first_batch` from the global RNG as torch 2.x's DataLoader does, without one."""
    # The base seed that each DataLoader iterator draws, then RandomSampler's own seed.
    torch.empty((), dtype=torch.int64).random_()
    seed = int(torch.empty((), dtype=torch.int64).random_().item())
    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.randperm(count, generator=generator)[:batch_size]


@functools.cache
def sampler_matches_dataloader() -> bool:
    """Return whether `sampler_first_batch` gives the DataLoader's batch and RNG state; keeps the caller's RNG state."""
    state = torch.get_rng_state()
    try:
        torch.default_generator.manual_seed(20_240_229)
        expected = dataloader_first_batch(97, 10), torch.get_rng_state()
        torch.default_generator.manual_seed(20_240_229)
        fast = sampler_first_batch(97, 10), torch.get_rng_state()
    finally:
        torch.set_rng_state(state)
    return torch.equal(fast[0], expected[0]) and torch.equal(fast[1], expected[1])


def candidate_sections(cfg: DictConfig, params: dict[str, Any], sections: dict[str, Any]) -> tuple[dict, dict]:
    """Return the candidate's plain model and data configs, with `params` applied.

    `params` maps override keys (a `+key` may add a key) to values. When every key lies
    in `SCORING_SECTIONS`, they are set on copies of the plain `sections` that they
    change, because copying or building OmegaConf configs per candidate took several
    times longer than the score. A section that no key changes is returned as it is,
    not copied. Other keys are set on a copy of the whole config, so that interpolations
    see them.
    """
    keys = [key.lstrip("+") for key in params]
    if all(key.split(".", 1)[0] in SCORING_SECTIONS for key in keys):
        plain = dict(sections)
        for name in {key.split(".", 1)[0] for key in keys}:
            plain[name] = copy_plain(sections[name])
        for key, value in zip(keys, params.values()):
            set_plain(plain, key.split("."), value)
        return plain["model"], plain["data"]

    candidate_cfg = copy.deepcopy(cfg)
    with open_dict(candidate_cfg):
        for key, value in zip(keys, params.values()):
            OmegaConf.update(candidate_cfg, key, value, merge=False)
    return (OmegaConf.to_container(candidate_cfg.model, resolve=True),
            OmegaConf.to_container(candidate_cfg.data, resolve=True))


def copy_plain(value: Any) -> Any:
    """Copy nested dicts and lists of plain values, faster than copy.deepcopy does."""
    if isinstance(value, dict):
        return {key: copy_plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_plain(item) for item in value]
    return value


def set_plain(container: Any, path: list[str], value: Any) -> None:
    """Set `value` at a dotted path of nested dicts and lists; list entries go by index."""
    for index, part in enumerate(path):
        last = index == len(path) - 1
        if isinstance(container, list):
            position = int(part)
            if position >= len(container):
                raise ConfigurationError(
                    f"Index {position} of '{'.'.join(path)}' is out of range for a list of {len(container)}; "
                    "give the list a base value long enough for the index."
                )
            if last:
                container[position] = value
            else:
                container = container[position]
        elif last:
            container[part] = value
        else:
            container = container.setdefault(part, {})


def cached_split(data: dict) -> DataSplit:
    """Open and scale the data once per data config and process, preloaded unless data.lazy_loading is true."""
    key = json.dumps(data, sort_keys=True)
    if key not in _SPLITS:
        while len(_SPLITS) >= _MAX_CACHED_SPLITS:
            _SPLITS.pop(next(iter(_SPLITS)))
        # With data.lazy_loading only a batch's rows are read, in another order. The score
        # stays the same, because permuting the points permutes the rows and columns of C alike.
        _SPLITS[key] = load_split(OmegaConf.create(data))
    return _SPLITS[key]
