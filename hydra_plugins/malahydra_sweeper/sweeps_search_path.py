"""Make the `sweeps` config group visible when malahydra is installed in editable mode.

The ready sweeps live in the top-level `sweeps/` folder and are packaged as
`malahydra.conf.sweeps`. A wheel puts them inside `malahydra/conf/`, where Hydra finds
the group through `pkg://malahydra.conf`. An editable install maps the two packages to
separate folders, so this plugin adds the folder that contains `sweeps/` to the search
path in that case only.
"""

import importlib.util
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


def sweeps_parent_outside_conf() -> Path | None:
    """Return the folder containing `sweeps/` when it is not the `malahydra.conf` folder, else None."""
    try:
        conf = importlib.util.find_spec("malahydra.conf")
        sweeps = importlib.util.find_spec("malahydra.conf.sweeps")
    except ImportError:
        return None
    if conf is None or sweeps is None or not sweeps.submodule_search_locations or not conf.submodule_search_locations:
        return None
    sweeps_dir = Path(list(sweeps.submodule_search_locations)[0]).resolve()
    conf_dir = Path(list(conf.submodule_search_locations)[0]).resolve()
    if sweeps_dir.name != "sweeps" or sweeps_dir.parent == conf_dir:
        return None
    return sweeps_dir.parent


class MalahydraSweepsSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        parent = sweeps_parent_outside_conf()
        if parent is not None:
            search_path.append(provider="malahydra-sweeps", path=f"file://{parent}")
