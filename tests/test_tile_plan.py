"""Tile plans: little halo overhead within the memory budget, small frames batched, same outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from selfden.errors import ModelError
from selfden.inference.loading import load_predictor
from selfden.inference.predictors import DirectPredictor
from selfden.inference.running import denoise_files
from selfden.geometry.tile_plan import CPU_RUN_PIXELS, MEMORY_BUDGET_BYTES, TARGET_OVERHEAD, plan_tiles, run_pixel_budget
from selfden.geometry.tiles import tile_image, valid_size

SHIPPED = Path(__file__).resolve().parents[1] / "bioimage_models"
# (min_size, size_step, halo, measured working bytes per input pixel) of the shipped packages.
METHODS = {"cae": (264, 8, 128, 261), "cosdd": (104, 8, 48, 1052), "dnnet": (60, 4, 28, 1594),
           "noise2atom": (136, 8, 64, 268)}
LARGE = [(1024, 1024), (2048, 2048), (4096, 4096), (1031, 2053), (2053, 1031)]


def border_floor(shape: tuple[int, int], min_size: int, step: int, halo: int) -> float:
    """Least possible overhead: one tile over the whole image and its reflected border halo."""
    return np.prod([valid_size(n + 2 * halo, min_size, step) for n in shape]) / np.prod(shape)


def computed_pixels(shape: tuple[int, int], plan, min_size: int, step: int, halo: int) -> int:
    tiles = tile_image(shape, plan.tile, min_size, step, halo, plan.overlap)
    return sum(t.shape[0] * t.shape[1] for t in tiles)


@pytest.mark.parametrize("shape", LARGE, ids=[f"{h}x{w}" for h, w in LARGE])
@pytest.mark.parametrize("method", METHODS)
def test_large_images_compute_at_most_125_percent_unless_the_border_halo_alone_costs_more(method, shape) -> None:
    min_size, step, halo, per_pixel = METHODS[method]
    budget = run_pixel_budget({"activation_bytes_per_pixel": per_pixel})
    plan = plan_tiles(shape, (min_size,) * 2, (step,) * 2, (halo,) * 2, budget)
    floor = border_floor(shape, min_size, step, halo)
    assert plan.overhead <= max(TARGET_OVERHEAD, floor) + 1e-9, (plan, floor)
    assert computed_pixels(shape, plan, min_size, step, halo) == pytest.approx(plan.overhead * np.prod(shape))


@pytest.mark.parametrize(("method", "from_side"), [("cosdd", 1024), ("dnnet", 1024), ("noise2atom", 2048)])
def test_the_default_budget_reaches_the_target_for_packages_stating_no_bytes_per_pixel(method, from_side) -> None:
    min_size, step, halo, _ = METHODS[method]
    for shape in [s for s in LARGE if min(s) >= from_side]:
        plan = plan_tiles(shape, (min_size,) * 2, (step,) * 2, (halo,) * 2, run_pixel_budget())
        assert plan.overhead <= TARGET_OVERHEAD, plan


@pytest.mark.parametrize("max_pixels", [600**2, 1500**2, run_pixel_budget()])
@pytest.mark.parametrize("method", METHODS)
def test_tiles_and_batches_stay_within_the_pixel_budget(method, max_pixels) -> None:
    min_size, step, halo, _ = METHODS[method]
    for shape in [(128, 128), (512, 512), *LARGE]:
        plan = plan_tiles(shape, (min_size,) * 2, (step,) * 2, (halo,) * 2, max_pixels)
        tiles = tile_image(shape, plan.tile, min_size, step, halo, plan.overlap)
        assert {t.shape for t in tiles} == {plan.input_shape}
        assert plan.batch * np.prod(plan.input_shape) <= max_pixels, plan


def test_a_budget_below_the_smallest_tile_gets_the_smallest_tile_one_per_run() -> None:
    min_size, step, halo, _ = METHODS["cae"]
    plan = plan_tiles((700, 500), (min_size,) * 2, (step,) * 2, (halo,) * 2, 200**2)
    smallest = valid_size(2 * halo + 1, min_size, step)
    assert plan.input_shape == (smallest, smallest) and plan.batch == 1, plan


def test_memory_budget_is_bytes_over_the_packages_bytes_per_pixel() -> None:
    assert run_pixel_budget({"activation_bytes_per_pixel": 1024}) == MEMORY_BUDGET_BYTES // 1024
    assert run_pixel_budget({}) < run_pixel_budget({"activation_bytes_per_pixel": 261})
    with pytest.raises(ModelError, match="activation_bytes_per_pixel is -1; expected a positive"):
        run_pixel_budget({"activation_bytes_per_pixel": -1})


@pytest.mark.parametrize("shape", [(128, 128), (37, 31), (1, 200)])
@pytest.mark.parametrize("method", METHODS)
def test_small_frames_are_one_tile_with_only_the_halo_and_valid_size_padding(method, shape) -> None:
    min_size, step, halo, _ = METHODS[method]
    plan = plan_tiles(shape, (min_size,) * 2, (step,) * 2, (halo,) * 2, run_pixel_budget())
    assert plan.n_tiles == 1
    assert plan.input_shape == tuple(valid_size(n + 2 * halo, min_size, step) for n in shape)
    assert plan.batch >= 8, "a stack of small frames shares session runs"


# --- a shipped package ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def noise2atom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pkg") / "noise2atom"
    shutil.copytree(SHIPPED / "noise2atom-atoms", folder)
    return folder


def with_bytes_per_pixel(package: Path, folder: Path, per_pixel: int) -> Path:
    """A copy of ``package`` that states a working memory per pixel (so a smaller tile budget)."""
    shutil.copytree(package, folder)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    rdf["config"]["selfden"]["activation_bytes_per_pixel"] = per_pixel
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder


def atoms(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    sample = np.load(SHIPPED / "noise2atom-atoms" / "test_input.npy")[0, 0]
    rng = np.random.default_rng(seed)
    return np.tile(sample, (4, 4))[: shape[-2], : shape[-1]] + rng.normal(0, 0.05, shape).astype(np.float32)


def test_shipped_package_tiled_under_a_small_budget_equals_one_whole_tile(noise2atom: Path, tmp_path: Path) -> None:
    image = atoms((300, 257))
    whole = load_predictor(noise2atom, device="cpu")
    small = load_predictor(with_bytes_per_pixel(noise2atom, tmp_path / "small", MEMORY_BUDGET_BYTES // 220**2), device="cpu")
    assert whole.plan(image.shape).n_tiles == 1 and small.plan(image.shape).n_tiles >= 4, small.plan(image.shape)
    expected, tiled = whole.predict(image).image, small.predict(image).image
    worst = float(np.abs(tiled - expected).max()) / float(expected.std())
    # test_shipped_models' tolerance: a halo a little short of the receptive field leaves ~1e-4.
    assert worst < 5e-3, f"tiled differs from the whole image by {worst:.2e} of its std"


class CountingPredictor(DirectPredictor):
    """A real predictor that counts its session runs."""

    runs = 0

    def run_tiles(self, batch: np.ndarray) -> np.ndarray:
        self.runs += 1
        return super().run_tiles(batch)


def test_a_stack_of_small_frames_runs_in_batches_and_equals_frame_by_frame(noise2atom: Path) -> None:
    frames = [atoms((64, 80), seed) for seed in range(6)]
    loaded = load_predictor(noise2atom, device="cpu")
    predictor = CountingPredictor(loaded.spec, loaded.runner)
    predictor.batch_pixels = predictor.max_pixels  # a GPU's batching, tested on this CPU
    assert predictor.frames_per_run((64, 80)) >= len(frames)
    batched = [prediction.image for prediction in predictor.predict_frames(frames)]
    assert predictor.runs == 1, "six small frames should share one session run"
    one_by_one = [predictor.predict(frame).image for frame in frames]
    for got, expected in zip(batched, one_by_one):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * float(expected.std()))


def test_on_a_cpu_small_frames_share_a_run_only_up_to_a_cache_sized_batch(noise2atom: Path) -> None:
    predictor = load_predictor(noise2atom, device="cpu")
    for shape in [(16, 16), (64, 80), (128, 128)]:
        plan = predictor.plan(shape)
        tile_pixels = plan.input_shape[0] * plan.input_shape[1]
        assert plan.batch == max(1, CPU_RUN_PIXELS // tile_pixels), (shape, plan)


def test_selfden_infer_on_a_stack_of_small_frames_equals_frame_by_frame(noise2atom: Path, tmp_path: Path) -> None:
    stack = np.stack([atoms((48, 48), seed) for seed in range(5)])
    np.save(tmp_path / "stack.npy", stack)
    written = denoise_files(noise2atom, [tmp_path / "stack.npy"], tmp_path / "out.npy", device="cpu")
    result = np.load(written[0])
    predictor = load_predictor(noise2atom, device="cpu")
    expected = np.stack([predictor.predict(frame).image for frame in stack])
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5 * float(expected.std()))


def test_tile_size_option_overrides_the_plan(noise2atom: Path) -> None:
    predictor = load_predictor(noise2atom, device="cpu", tile_size=96)
    plan = predictor.plan((500, 500))
    assert plan.tile == (96, 96) and plan.n_tiles > 1
    assert load_predictor(noise2atom, device="cpu").plan((500, 500)).overhead < plan.overhead


def test_sampling_plans_per_image_size_like_the_direct_denoiser() -> None:
    direct = load_predictor(SHIPPED / "cosdd-stripe", device="cpu")
    with load_predictor(SHIPPED / "cosdd-stripe", device="cpu", samples=2) as predictor:
        assert predictor.auto_tiles and predictor.plan((1024, 1024)).n_tiles == 1
        for shape in [(128, 128), (1024, 1024)]:
            assert predictor.plan(shape) == direct.plan(shape)
            assert predictor.frames_per_run(shape) == direct.frames_per_run(shape)
