"""The `malahydra` command line: tools around training runs and searches.

    malahydra observables Be_snapshot0.out.npy Be_snapshot1.out.npy [--json]
    malahydra study status --url-env MALAHYDRA_POSTGRESQL_URL --study malahydra
    malahydra report outputs/sweeps/train
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.resources import files
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from malahydra.data.snapshots import calculation_data_path, load_calculation_data, open_array
from malahydra.errors import MalahydraError
from malahydra.physics.observables import EnergyGrid, band_energy_from_dos, dos_from_ldos
from malahydra.search.errors import SearchConfigError

LDOS_SUFFIX = ".out.npy"


def default_energy_grid() -> EnergyGrid:
    """Return the energy grid of the default data config (conf/data/be2.yaml)."""
    data_cfg = OmegaConf.create(files("malahydra.conf").joinpath("data", "be2.yaml").read_text())
    grid = data_cfg.energy_grid
    return EnergyGrid(offset=float(grid.offset), spacing=float(grid.spacing), count=int(grid.count))


def observables_of_file(path: Path, offset: float, spacing: float) -> dict:
    """Compute the electron count, self-consistent Fermi energy and band energy of one LDOS file."""
    if not path.name.endswith(LDOS_SUFFIX):
        raise MalahydraError(
            f"{path} is not an LDOS file: expected a name ending in {LDOS_SUFFIX}, such as Be_snapshot0.out.npy."
        )
    if not path.is_file():
        raise MalahydraError(f"The LDOS file {path} does not exist.")
    name = path.name[: -len(LDOS_SUFFIX)]
    ldos = open_array(path)
    calculation = load_calculation_data(calculation_data_path(path.parent, name), tuple(ldos.shape[:3]))
    grid = EnergyGrid(offset=offset, spacing=spacing, count=int(ldos.shape[-1]))
    dos = dos_from_ldos(np.asarray(ldos, dtype=np.float64), calculation.voxel_volume)
    result = band_energy_from_dos(dos, grid, calculation.number_of_electrons, calculation.temperature)
    return {
        "name": name,
        "fermi_energy_ev": result.fermi_energy,
        "band_energy_ev": result.band_energy,
        "number_of_electrons": result.number_of_electrons,
    }


def run_observables(args: argparse.Namespace) -> int:
    rows = [observables_of_file(Path(path), args.energy_offset, args.energy_spacing) for path in args.paths]
    if args.json:
        print(json.dumps({"snapshots": rows}, indent=2))
        return 0
    print(f"{'snapshot':<24} {'electrons':>12} {'E_F (eV)':>12} {'E_band (eV)':>14}")
    for row in rows:
        print(
            f"{row['name']:<24} {row['number_of_electrons']:>12.6f} "
            f"{row['fermi_energy_ev']:>12.6f} {row['band_energy_ev']:>14.6f}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="malahydra", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    grid = default_energy_grid()
    observables = commands.add_parser(
        "observables",
        help="print electron count, self-consistent Fermi energy and band energy of LDOS files",
        description="For each NAME.out.npy, read NAME.info.json (or the pw.x output NAME.out) "
        "beside it and print the electron count, the self-consistent Fermi energy and the band energy.",
    )
    observables.add_argument("paths", nargs="+", metavar="PATH", help="LDOS files NAME.out.npy")
    observables.add_argument(
        "--energy-offset", type=float, default=grid.offset, help=f"energy of the first LDOS value in eV (default {grid.offset})"
    )
    observables.add_argument(
        "--energy-spacing", type=float, default=grid.spacing, help=f"spacing of the energy grid in eV (default {grid.spacing})"
    )
    observables.add_argument("--json", action="store_true", help="print JSON instead of a table")
    observables.set_defaults(handler=run_observables)

    from malahydra.search.study_admin import add_study_commands

    add_study_commands(commands)

    report = commands.add_parser(
        "report",
        help="rebuild the result files, best_config.yaml and plots of a search and print its best trials",
        description="Read the study of a sweep directory (storage and study name from its multirun.yaml) "
        "and rewrite optimization_results.yaml, trials.csv, best_config.yaml and the PNG plots there. "
        "The study is only read, so this also works while the search runs.",
    )
    report.add_argument("sweep_dir", metavar="SWEEP_DIR", type=Path, help="hydra.sweep.dir of a `python train.py -m` run")
    report.add_argument("--top", type=int, default=5, help="number of best trials in the printed table (default 5)")
    report.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    report.set_defaults(handler=run_report)
    return parser


def run_report(args: argparse.Namespace) -> int:
    from malahydra.search.report import ReportError, report_sweep

    if args.top < 1:
        raise ReportError(f"Invalid --top {args.top}; expected an integer >= 1.")
    report = report_sweep(args.sweep_dir, top=args.top, plots=not args.no_plots)
    for note in report.notes:
        print(f"Note: {note}")
    print(report.text())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except MalahydraError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    except SearchConfigError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
