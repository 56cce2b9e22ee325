"""Loading snapshots: roles, memory mapping, scaling, and every kind of bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from malahydra.data import dataset
from malahydra.data.dataset import load_split
from malahydra.data.scaling import SCALING_KINDS, Scaler
from malahydra.errors import ConfigurationError, DataError


def test_be2_split_shapes(make_config):
    split = load_split(make_config().data)
    inputs, outputs = split.tensors["training"]
    assert [s.name for s in split.training] == ["Be_snapshot0"]
    assert [s.name for s in split.validation] == ["Be_snapshot1"]
    assert inputs.shape == (18 * 18 * 27, 91)
    assert outputs.shape == (18 * 18 * 27, 11)
    assert inputs.dtype == torch.float32
    assert outputs.dtype == torch.float32


def test_snapshots_are_memory_mapped(make_config):
    split = load_split(make_config().data)
    base = split.training[0].descriptors
    while not isinstance(base, np.memmap) and base.base is not None:
        base = base.base
    assert isinstance(base, np.memmap)


def test_grid_index_columns_kept_on_request(make_config):
    split = load_split(make_config("data.descriptors_have_grid_indices=false").data)
    assert split.input_width == 94


def test_scalers_fitted_on_training_only(make_config, be2_dir):
    split = load_split(make_config().data)
    training_ldos = np.load(be2_dir / "Be_snapshot0.out.npy").reshape(-1, 11).astype(np.float64)
    assert split.output_scaler.shift[0] == pytest.approx(training_ldos.min())
    assert split.output_scaler.scale[0] == pytest.approx(training_ldos.max() - training_ldos.min())
    scaled = split.tensors["training"][1]
    assert float(scaled.min()) == pytest.approx(0.0, abs=1e-6)
    assert float(scaled.max()) == pytest.approx(1.0, abs=1e-6)


def test_float64_input_is_float32_in_memory(be2_copy, make_config):
    descriptors = np.load(be2_copy / "Be_snapshot0.in.npy").astype(np.float64)
    np.save(be2_copy / "Be_snapshot0.in.npy", descriptors)
    split = load_split(make_config(data_dir=be2_copy).data)
    assert split.training[0].descriptors.dtype == np.float64
    assert split.tensors["training"][0].dtype == torch.float32


@pytest.mark.parametrize("kind", SCALING_KINDS)
def test_scaler_chunked_fit_equals_whole(kind):
    values = np.random.default_rng(1).normal(3.0, 2.0, size=(1000, 5)) * np.arange(1, 6)
    whole = Scaler(kind).fit([values])
    chunked = Scaler(kind).fit(np.array_split(values, 7))
    np.testing.assert_allclose(chunked.shift, whole.shift, rtol=1e-12)
    np.testing.assert_allclose(chunked.scale, whole.scale, rtol=1e-12)
    restored = Scaler.from_state_dict(whole.state_dict())
    # The transform returns float32, so the round trip is exact to float32 precision of the range.
    round_trip = restored.inverse_transform(restored.transform(values))
    np.testing.assert_allclose(round_trip, values, rtol=1e-6, atol=1e-6 * np.abs(values).max())


def test_scaler_feature_wise_standard():
    values = np.random.default_rng(2).normal(size=(500, 3)) * [1.0, 10.0, 100.0] + [0.0, 5.0, -5.0]
    scaled = Scaler("feature-wise-standard").fit([values]).transform(values)
    np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(scaled.std(axis=0), 1.0, rtol=1e-5)


def test_scaler_constant_column_stays_finite():
    values = np.ones((10, 2))
    scaled = Scaler("feature-wise-minmax").fit([values]).transform(values)
    assert np.isfinite(scaled).all()


def test_unknown_scaling_rejected():
    with pytest.raises(ConfigurationError, match="Unknown scaling 'log'"):
        Scaler("log")


def test_lazy_batches_cover_training_points(make_config):
    split = load_split(make_config("+data.lazy_loading=true").data)
    assert split.lazy
    assert split.tensors == {}
    order = torch.randperm(split.training[0].points, generator=torch.Generator().manual_seed(0))
    seen = sum(inputs.shape[0] for inputs, _ in dataset.lazy_batches(split, order, 40))
    assert seen == split.training[0].points


def test_lazy_batch_matches_preloaded_rows(make_config):
    preloaded = load_split(make_config().data)
    lazy = load_split(make_config("+data.lazy_loading=true").data)
    order = torch.tensor([5, 3, 1000, 8747])
    inputs, targets = next(dataset.lazy_batches(lazy, order, 4))
    rows = torch.tensor([3, 5, 1000, 8747])
    torch.testing.assert_close(inputs, preloaded.tensors["training"][0][rows])
    torch.testing.assert_close(targets, preloaded.tensors["training"][1][rows])


# -- bad input: one clear error naming the file or value --------------------------------


def test_missing_data_dir_says_how_to_set(make_config, tmp_path):
    cfg = make_config(data_dir=tmp_path / "nowhere")
    with pytest.raises(DataError, match="does not exist: point data.dir or MALAHYDRA_DATA_DIR"):
        load_split(cfg.data)


def test_unset_data_dir_says_how_to_set(make_config):
    cfg = make_config("data.dir=null")
    with pytest.raises(DataError, match="No data directory is set"):
        load_split(cfg.data)


def test_missing_snapshot_file_named(be2_copy, make_config):
    (be2_copy / "Be_snapshot1.out.npy").unlink()
    with pytest.raises(DataError, match=r"LDOS file .*Be_snapshot1\.out\.npy is missing"):
        load_split(make_config(data_dir=be2_copy).data)


def test_disagreeing_shapes_named(be2_copy, make_config):
    ldos = np.load(be2_copy / "Be_snapshot0.out.npy")
    np.save(be2_copy / "Be_snapshot0.out.npy", ldos[:, :, :20])
    with pytest.raises(DataError, match=r"Be_snapshot0: the descriptor grid \(18, 18, 27\).*differs from the LDOS grid \(18, 18, 20\)"):
        load_split(make_config(data_dir=be2_copy).data)


def test_nan_descriptor_named(be2_copy, make_config):
    descriptors = np.load(be2_copy / "Be_snapshot0.in.npy")
    descriptors[2, 0, 0, 10] = np.nan
    np.save(be2_copy / "Be_snapshot0.in.npy", descriptors)
    with pytest.raises(DataError, match="Be_snapshot0: the descriptor values contain NaN or infinity"):
        load_split(make_config(data_dir=be2_copy).data)


def test_energy_count_mismatch_named(make_config):
    cfg = make_config("data.energy_grid.count=250")
    with pytest.raises(DataError, match="has 11 LDOS energies but data.energy_grid.count is 250"):
        load_split(cfg.data)


def test_unreadable_info_json_named(be2_copy, make_config):
    (be2_copy / "Be_snapshot1.info.json").write_text("{ not json")
    with pytest.raises(DataError, match=r"calculation data file .*Be_snapshot1\.info\.json cannot be read"):
        load_split(make_config(data_dir=be2_copy).data)


def test_info_json_missing_key_named(be2_copy, make_config):
    info = json.loads((be2_copy / "Be_snapshot1.info.json").read_text())
    del info["temperature"]
    (be2_copy / "Be_snapshot1.info.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match="missing key 'temperature'"):
        load_split(make_config(data_dir=be2_copy).data)


def test_no_validation_snapshot_rejected(make_config):
    with pytest.raises(ConfigurationError, match="data.validation lists no snapshot"):
        load_split(make_config("data.validation=[]").data)


def test_non_float_array_rejected(be2_copy, make_config):
    descriptors = np.load(be2_copy / "Be_snapshot0.in.npy")
    np.save(be2_copy / "Be_snapshot0.in.npy", descriptors.astype(np.int32))
    with pytest.raises(DataError, match="dtype int32: expected float32 or float64"):
        load_split(make_config(data_dir=be2_copy).data)
