"""Put the shipped packages' measured quality into RESULTS.md, with the commands that measured it.

The numbers are measured by ``bioimage_models/held_out.py`` (the synthetic demos on frames they
never saw, beside the best oracle-tuned classical filter) and ``bioimage_models/build_real.py`` (the
real STEM package on held-out frames) and recorded in ``bioimage_models/packages.json``; this script
turns those records into a RESULTS.md section (no measuring here).

    python benchmarks/shipped_packages.py
"""

from __future__ import annotations

import json
from typing import Any

from common import BENCH_DIR, command_line, machine_description, render_results_md, save_result, today

PACKAGES = BENCH_DIR.parent / "bioimage_models" / "packages.json"


def held_out_table(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows = []
    for name, record in records.items():
        held = record.get("held_out")
        if held is None:
            continue
        rows.append([name, record.get("steps"), held["frames"], held["noisy"], held["denoised"], held.get("tta", "–"),
                     held["best_baseline_psnr"], held["best_baseline"], round(held["denoised"] - held["best_baseline_psnr"], 2)])
    return {
        "title": "(a) synthetic demos on frames they never saw",
        "note": "`python bioimage_models/held_out.py --frames 32`: each package's training suite drawn again with "
        "data seed 1 (training used seed 0), 32 frames, denoised with the package as `selfden infer` does (CPU); "
        "affine PSNR in dB against the truth. Best classical: Gaussian blur, non-local means and BM3D, each with "
        "its strength tuned on the truth (an upper bound for that filter).",
        "columns": ["package", "training steps", "frames", "noisy", "denoised", "--tta", "best classical", "which",
                    "denoised - best classical"],
        "rows": rows,
    }


def real_table(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows = []
    for name, record in records.items():
        if not record.get("real"):
            continue
        for label in ("raw", "denoised", "blur1", "blur2"):
            rows.append([name, label, record[f"css_{label}"], record[f"streaks_{label}"]])
    return {
        "title": "(b) the real STEM package on held-out frames",
        "note": "`python bioimage_models/build_real.py --from-run RUN --trained-by ...` (the run: `selfden train cosdd "
        "stem_pt_frames_00-79.tif -o run --minutes 20 --size tiny --patch-size 64 --batch-size 4 --seed 0`, 1907 "
        "steps on 2 shared CPU cores): frames 80-99 of ../shared/data/stem_pt_experimental.tif, never trained on. "
        "CSS: mean SSIM of consecutive frames (no ground truth exists); row-streak index: about 1 without scan-line "
        "streaks. blur1/blur2: Gaussian blur of sigma 1/2 px, shown for scale (blur raises CSS too).",
        "columns": ["package", "frames", "CSS", "row-streak index"],
        "rows": rows,
    }


def main() -> None:
    records = json.loads(PACKAGES.read_text())
    save_result({"kind": "speed", "title": "Shipped packages: quality on frames they were not trained on",
                 "command": command_line("shipped_packages.py"), "date": today(), "machine": machine_description(),
                 "tables": [held_out_table(records), real_table(records)]}, "shipped_packages")
    print(render_results_md())


if __name__ == "__main__":
    main()
