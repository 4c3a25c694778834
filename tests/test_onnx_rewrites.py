"""Exported graphs use only ops onnxruntime runs vectorised, with the values torch computes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from selfden.export.onnx import export_onnx
from selfden.export.onnx_graphs import export_graph
from selfden.export.onnx_rewrites import rewrite_for_speed, rewrite_mish, rewrite_softplus
from selfden.package.runtime import open_session

#: From far below float32 exp's underflow to far above its overflow, and the values between.
EDGE_VALUES = np.concatenate([[-1e4, -200.0, -88.7, -30.0, -1e-8, 0.0, 1e-8, 30.0, 88.7, 200.0, 1e4],
                              np.linspace(-20, 20, 4001)]).astype(np.float32)  # fmt: skip


def _graph(nodes: list[onnx.NodeProto], outputs: list[str]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [None]) for name in outputs],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _mish_graph() -> onnx.ModelProto:
    return _graph([helper.make_node("Softplus", ["x"], ["s"]), helper.make_node("Tanh", ["s"], ["t"]),
                   helper.make_node("Mul", ["t", "x"], ["y"])], ["y"])  # fmt: skip


def _run(model: onnx.ModelProto, tmp_path: Path, name: str) -> list[np.ndarray]:
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return open_session(path).run(None, {"x": EDGE_VALUES})


def test_mish_becomes_sigmoid_arithmetic_with_torchs_values_at_every_magnitude(tmp_path: Path) -> None:
    model = _mish_graph()
    assert rewrite_mish(model) == 1
    onnx.checker.check_model(model)
    assert "Softplus" not in Counter(n.op_type for n in model.graph.node)
    (got,) = _run(model, tmp_path, "mish")
    expected = torch.nn.functional.mish(torch.from_numpy(EDGE_VALUES).double()).numpy()
    assert np.isfinite(got).all()
    # onnxruntime's vectorised sigmoid is good to ~1e-6 absolute far out in its tail (x < -15,
    # where mish is below 1e-5): far inside the 1e-4 that every export is checked to.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=3e-6)


def test_softplus_becomes_a_form_that_neither_overflows_nor_underflows(tmp_path: Path) -> None:
    model = _graph([helper.make_node("Softplus", ["x"], ["y"])], ["y"])
    assert rewrite_softplus(model) == 1
    (got,) = _run(model, tmp_path, "softplus")
    expected = torch.nn.functional.softplus(torch.from_numpy(EDGE_VALUES).double()).numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_a_softplus_read_by_more_than_the_tanh_stays_one_node_that_softplus_rewrites(tmp_path: Path) -> None:
    model = _graph([helper.make_node("Softplus", ["x"], ["s"]), helper.make_node("Tanh", ["s"], ["t"]),
                    helper.make_node("Mul", ["t", "x"], ["y"])], ["y", "s"])  # fmt: skip
    before = _run(model, tmp_path, "before")
    assert rewrite_for_speed(model) == {"mish": 0, "softplus": 1}
    after = _run(model, tmp_path, "after")
    for b, a in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=3e-6)


def test_a_graph_without_those_ops_is_left_exactly_as_it_was() -> None:
    model = _graph([helper.make_node("Tanh", ["x"], ["y"])], ["y"])
    before = model.SerializeToString()
    assert rewrite_for_speed(model) == {"mish": 0, "softplus": 0}
    assert model.SerializeToString() == before


def _small_cosdd_graph(name: str) -> torch.nn.Module:
    from selfden.methods.cosdd.config import CosddConfig
    from selfden.methods.cosdd.method import Cosdd
    from selfden.normalisation import Normalisation

    torch.manual_seed(0)
    config = CosddConfig(size="tiny", features=8, latent_channels=4, levels=2, downsamplings=1)
    network = Cosdd(config, Normalisation(offset=0.0, scale=1.0), torch.device("cpu")).export_graphs()[name]
    for layer in network.modules():  # batch statistics as after training, not the identity
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 2.0)
    return network


@pytest.mark.parametrize("graph", ["denoiser", "sampler_encoder", "sampler_decoder"])
def test_cosdd_graphs_export_without_softplus_a_split_gate_or_a_concat_and_match_torch(graph: str, tmp_path: Path) -> None:
    network = _small_cosdd_graph(graph)
    report = export_graph(network, tmp_path / f"{graph}.onnx", sizes=((32, 32), (32, 48)))
    assert report.passed  # within 1e-4 of torch
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / f"{graph}.onnx")).graph.node)
    assert ops["Softplus"] == 0
    # Each gate is two convolutions, not one split in two; the decoder still splits each of its
    # 2 levels' posterior into mean and scale.
    assert ops["Slice"] + ops["Split"] == (4 if graph == "sampler_decoder" else 0)
    assert ops["Concat"] == 0  # a conv of a concatenation is exported as a sum of convs


def test_a_module_with_mish_exports_through_the_rewrite(tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Mish(), torch.nn.Conv2d(4, 1, 1))
    report = export_onnx(network, tmp_path / "mish.onnx")
    assert report.passed
    assert "Softplus" not in {n.op_type for n in onnx.load(str(tmp_path / "mish.onnx")).graph.node}


# --- shipped packages are rebuilt from their own files (bioimage_models/build.py --from-package) ---

SHIPPED = Path(__file__).resolve().parents[1] / "bioimage_models"


def _package_copy(tmp_path: Path, extra_graph: str) -> Path:
    """A shipped package whose rdf also names ``extra_graph`` among selfden's graphs."""
    import shutil

    import yaml

    folder = tmp_path / "pkg"
    shutil.copytree(SHIPPED / "dnnet-poisson-gaussian", folder)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    rdf["config"]["selfden"]["graphs"]["extra"] = extra_graph
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder


def test_rebuilding_a_package_rewrites_its_graphs_with_the_same_values(tmp_path: Path) -> None:
    from selfden.export.border_package import add_borders

    folder = _package_copy(tmp_path, "extra.onnx")
    onnx.save(_mish_graph(), str(folder / "extra.onnx"))
    before = _run(_mish_graph(), tmp_path, "before")
    add_borders(folder)
    rebuilt = onnx.load(str(folder / "extra.onnx"))
    assert "Softplus" not in {n.op_type for n in rebuilt.graph.node}
    np.testing.assert_allclose(_run(rebuilt, tmp_path, "after")[0], before[0], rtol=1e-5, atol=3e-6)


def test_rebuilding_a_package_whose_rdf_names_a_file_outside_it_touches_nothing(tmp_path: Path) -> None:
    from selfden.export.border_package import add_borders
    from selfden.export.onnx import ExportError

    outside = tmp_path / "outside.onnx"
    onnx.save(_mish_graph(), str(outside))
    folder = _package_copy(tmp_path, "../outside.onnx")
    kept = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(ExportError) as error:
        add_borders(folder)
    message = str(error.value)
    assert "\n" not in message and "pkg" in message and "outside.onnx" in message, message
    assert outside.read_bytes() == _mish_graph().SerializeToString()  # not rewritten
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside.onnx", "pkg"]  # no staging copy left
