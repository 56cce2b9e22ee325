"""Names of the validation metrics, without the torch import of `malahydra.training.metrics`."""

# `training.metric` -> key of that metric in the per-epoch metrics dict and in metrics.json.
METRIC_KEYS = {
    "ldos": "ldos_mse",
    "band_energy": "band_energy_mev_per_atom",
    "fermi_energy": "fermi_energy_ev",
}
