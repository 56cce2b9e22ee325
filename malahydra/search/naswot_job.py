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
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from malahydra.data.dataset import DataSplit, load_split
from malahydra.errors import ConfigurationError, MalahydraError
from malahydra.model.network import network_from_config
from malahydra.training.devices import select_device

from .methods import derived_seed
from .naswot_score import NaswotScoreError, naswot_score

log = logging.getLogger(__name__)

CANDIDATES_FILE = "naswot_candidates.json"
SCORES_FILE = "naswot_scores.json"
# Config sections that determine a candidate's score: the network and its input data.
SCORING_SECTIONS = ("model", "data")

# Scaled training data of the last data configs, so that the in-process launcher loads
# the snapshots once per sweep instead of once per job. Keyed by the data config as YAML.
_SPLITS: dict[str, DataSplit] = {}
_MAX_CACHED_SPLITS = 2


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
    temporary.write_text(json.dumps({"candidates": entries}, indent=1))
    os.replace(temporary, output_dir / SCORES_FILE)

    scored = sum(all(v is not None for v in e["values"]) for e in entries)
    log.info("Scored %d of %d candidates (%d repeat(s) each).", scored, len(entries), repeats)
    return float(scored)


def score_candidates(
    cfg: DictConfig, candidates: list[dict], repeats: int, job_index: int | None = None
) -> list[dict[str, Any]]:
    """Score each candidate `repeats` times; return one entry per candidate.

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
    for candidate in candidates:
        entry: dict[str, Any] = {"number": int(candidate["number"]), "seeds": seeds, "values": [], "reasons": []}
        try:
            model_cfg, data = candidate_sections(cfg, candidate["params"], sections)
            split = cached_split(data)
        except MalahydraError as error:
            entry["values"] = [None] * repeats
            entry["reasons"] = [f"{type(error).__name__}: {error}"] * repeats
            entries.append(entry)
            continue
        for seed in seeds:
            try:
                value = score_network(model_cfg, split, batch_size, seed, device)
                entry["values"].append(value)
                entry["reasons"].append(None)
            except (NaswotScoreError, MalahydraError) as error:
                entry["values"].append(None)
                entry["reasons"].append(f"{type(error).__name__}: {error}")
        entries.append(entry)
    return entries


def score_network(model_cfg: DictConfig, split: DataSplit, batch_size: int, seed: int, device: torch.device) -> float:
    """Build the candidate's network from `seed` and score it on the first shuffled mini-batch."""
    inputs = split.tensors["training"][0]
    torch.manual_seed(seed)
    network = network_from_config(model_cfg, split.input_width, split.output_width).to(device)
    # The DataLoader draws its shuffling seed from the global RNG right after the network,
    # as MALA's does. Shuffling an index range consumes the RNG exactly as shuffling the
    # inputs themselves, because the sampler depends only on the length.
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.arange(inputs.shape[0])), batch_size=batch_size, shuffle=True
    )
    (indices,) = next(iter(loader))
    score = naswot_score(network, inputs[indices].to(device))
    if not math.isfinite(score):
        raise NaswotScoreError(f"NASWOT score is {score}; record the candidate as failed.")
    return score


def candidate_sections(cfg: DictConfig, params: dict[str, Any], sections: dict[str, Any]) -> tuple[DictConfig, dict]:
    """Return the candidate's model config and plain data config, with `params` applied.

    `params` maps override keys (a `+key` may add a key) to values. When every key lies
    in `SCORING_SECTIONS`, they are set on a copy of the plain `sections`, because copying
    or building OmegaConf configs per candidate took several times longer than the score.
    Other keys are set on a copy of the whole config, so that interpolations see them.
    """
    keys = [key.lstrip("+") for key in params]
    if all(key.split(".", 1)[0] in SCORING_SECTIONS for key in keys):
        plain = copy.deepcopy(sections)
        for key, value in zip(keys, params.values()):
            set_plain(plain, key.split("."), value)
        return OmegaConf.create(plain["model"]), plain["data"]

    candidate_cfg = copy.deepcopy(cfg)
    with open_dict(candidate_cfg):
        for key, value in zip(keys, params.values()):
            OmegaConf.update(candidate_cfg, key, value, merge=False)
    return candidate_cfg.model, OmegaConf.to_container(candidate_cfg.data, resolve=True)


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
    """Load the scaled training and validation data once per data config and process."""
    key = json.dumps(data, sort_keys=True)
    if key not in _SPLITS:
        while len(_SPLITS) >= _MAX_CACHED_SPLITS:
            _SPLITS.pop(next(iter(_SPLITS)))
        # NOTE: the batch is gathered from preloaded tensors, so data.lazy_loading is not
        # honoured here; the training set must fit in memory for NASWOT.
        _SPLITS[key] = load_split(OmegaConf.create(data), preload=True)
    return _SPLITS[key]
