"""Run a sweep's jobs one after another in the driver process, as Hydra's basic launcher does, at less cost per job.

The sweeper uses this launcher wherever `hydra/launcher` is Hydra's `basic` (the
default). Jobs see the same config, the same `HydraConfig`, the same `.hydra/` files
and the same callbacks as under the basic launcher. What costs less:

- Composition. The basic launcher composes every job's config from the config files,
  about 0.25 s a job on one core of the benchmark machine (an estimate from a profile).
  Here a job whose overrides start with the sweep's own fixed ones gets a copy of the
  sweep's config, which has them applied already. Other jobs get a copy of one
  composition per set of config-group choices. Hydra's own override code then applies
  the job's values. A job that changes a config group or the search path gets a full
  composition, so a cached config is never used in place of a different one.
- Copies. `hydra.core.utils.run_job` deep-copies the job's config twice. Here the config
  already belongs to the job, so only its part without the `hydra` node is copied, for
  the task function.
- The `.hydra/` files are written with the libyaml emitter when PyYAML has it.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import yaml
from hydra import version
from hydra.core.hydra_config import HydraConfig
from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import (
    JobReturn,
    JobRuntime,
    JobStatus,
    _flush_loggers,
    configure_log,
    env_override,
    filter_overrides,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def is_basic_launcher(launcher: Any) -> bool:
    """Return whether `launcher` is Hydra's in-process `hydra/launcher=basic` itself, not a subclass."""
    return f"{type(launcher).__module__}.{type(launcher).__qualname__}" == (
        "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    )


class JobConfigs:
    """The composed config of each job of a sweep, from the sweep's config and the job's overrides."""

    def __init__(self, hydra_context: HydraContext, master: DictConfig) -> None:
        self.loader = hydra_context.config_loader
        self.master = master
        self.master_hydra_overrides = list(master.hydra.overrides.hydra)
        self.parser = OverridesParser.create()
        # The config repository with the search path of the sweep, to tell groups from keys.
        _, self.repository = self.loader._parse_overrides_and_create_caching_repo(  # type: ignore[attr-defined]
            master.hydra.job.config_name, self.master_hydra_overrides
        )
        # Composed configs by the job's config-group overrides, in order.
        self.composed: dict[tuple[str, ...], DictConfig] = {}
        self.parsed: dict[str, tuple[Override, bool]] = {}
        # The overrides of the sweep's own command line that its config applied: all but the sweeps.
        self.master_fixed = [line for line in master.hydra.overrides.task if not self._parse(line)[0].is_sweep_override()]

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """Return the job's config: equal to `load_sweep_config(master, overrides)`, and the caller's to change."""
        parsed = [self._parse(line) for line in overrides]
        if any(o.is_sweep_override() or o.key_or_group.startswith("hydra.searchpath") for o, _ in parsed):
            return self.loader.load_sweep_config(self.master, list(overrides))
        # Jobs of a sweep usually start with the sweep's own fixed overrides. The sweep's
        # config has applied them already, so a copy of it serves as the composed config.
        fixed = len(self.master_fixed)
        if list(overrides[:fixed]) == self.master_fixed and not any(is_group for _, is_group in parsed[fixed:]):
            config = copy.deepcopy(self.master)
            OmegaConf.set_readonly(config.hydra, False)
            values = parsed[fixed:]
        else:
            groups = tuple(o.input_line for o, is_group in parsed if is_group)
            if groups not in self.composed:
                self.composed[groups] = self.loader.load_sweep_config(self.master, list(groups))
            config = copy.deepcopy(self.composed[groups])
            values = parsed
        self.loader._apply_overrides_to_config([o for o, is_group in values if not is_group], config)  # type: ignore[attr-defined]
        self._record_overrides(config, [o for o, _ in parsed])
        OmegaConf.copy_cache(from_config=self.master, to_config=config)
        return config

    def _parse(self, line: str) -> tuple[Override, bool]:
        """Parse one override; return it and whether it chooses a config group. Cached: jobs share most overrides."""
        if line not in self.parsed:
            override = self.parser.parse_override(line)
            # The test of hydra._internal.defaults_list.Overrides, which sorts overrides in composition.
            is_group = self.repository.group_exists(override.key_or_group) and not isinstance(override.value(), dict)
            self.parsed[line] = (override, is_group)
        return self.parsed[line]

    def _record_overrides(self, config: DictConfig, parsed: list[Override]) -> None:
        """Set the overrides lists and `hydra.job.override_dirname` as a full composition does."""
        task = [o for o in parsed if not o.is_hydra_override()]
        dirname = config.hydra.job.config.override_dirname
        with open_dict(config.hydra):
            config.hydra.overrides.task = [o.input_line for o in task]
            config.hydra.overrides.hydra = self.master_hydra_overrides + [o.input_line for o in parsed if o.is_hydra_override()]
            config.hydra.job.override_dirname = get_overrides_dirname(
                overrides=task, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys
            )


class InProcessLauncher(Launcher):
    """Launcher for jobs in the driver process; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self.configs: JobConfigs | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.configs = JobConfigs(hydra_context, config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.configs is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("Launching %d jobs locally", len(job_overrides))
        returns = []
        for offset, overrides in enumerate(job_overrides):
            index = initial_job_idx + offset
            log.info("\t#%d : %s", index, " ".join(filter_overrides(overrides)))
            config = self.configs.compose(overrides)
            with open_dict(config):
                config.hydra.job.id = index
                config.hydra.job.num = index
            returns.append(self._run_job(config))
        # The driver logs with Hydra's logging again; each job set up its own.
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns

    def _run_job(self, config: DictConfig) -> JobReturn:
        """Run the job as `hydra.core.utils.run_job` does, without its copies, because `config` belongs to this job."""
        assert self.hydra_context is not None and self.task_function is not None
        callbacks = self.hydra_context.callbacks
        old_cwd = os.getcwd()
        previous = HydraConfig.instance().cfg
        # HydraConfig gets the job's config itself, because HydraConfig.set_config would
        # copy the hydra node, and readers of HydraConfig read only that node.
        HydraConfig.instance().cfg = config  # type: ignore[assignment]
        output_dir = os.path.join(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir))
        with open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = os.path.abspath(output_dir)
        OmegaConf.set_readonly(config.hydra, True)

        chdir = config.hydra.job.chdir
        if chdir is None:
            chdir = not version.base_at_least("1.2")
        try:
            job = JobReturn()
            # The job's config without the hydra node; copies the user's part only.
            job.cfg = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
            # Readers of hydra_cfg read its hydra node; this saves copying it.
            job.hydra_cfg = config
            job.overrides = list(config.hydra.overrides.task)
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            job.working_dir = output_dir if chdir else old_cwd
            if chdir:
                os.chdir(output_dir)
            configure_log(config.hydra.job_logging, config.hydra.verbose)

            if config.hydra.output_subdir is not None:
                hydra_output = Path(config.hydra.runtime.output_dir) / str(config.hydra.output_subdir)
                _save_yaml(_plain(job.cfg), hydra_output / "config.yaml")
                _save_yaml({"hydra": _plain(config.hydra)}, hydra_output / "hydra.yaml")
                _save_yaml(_plain(config.hydra.overrides.task), hydra_output / "overrides.yaml")

            with env_override(dict(config.hydra.job.env_set)):
                callbacks.on_job_start(config=config, task_function=self.task_function)
                try:
                    job.return_value = self.task_function(job.cfg)
                    job.status = JobStatus.COMPLETED
                except Exception as error:  # noqa: BLE001 -- the sweeper reads failures from the JobReturn
                    job.return_value = error
                    job.status = JobStatus.FAILED

            job.task_name = JobRuntime.instance().get("name")
            _flush_loggers()
            callbacks.on_job_end(config=config, job_return=job)
            return job
        finally:
            HydraConfig.instance().cfg = previous
            if chdir:
                os.chdir(old_cwd)


def _plain(node: Any) -> Any:
    """Convert a node to plain data as `OmegaConf.to_yaml` does: interpolations unresolved, enums as names."""
    return OmegaConf.to_container(node, resolve=False, enum_to_str=True)


def _save_yaml(data: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        yaml.dump(data, file, Dumper=_Dumper, default_flow_style=False, allow_unicode=True, sort_keys=False)
