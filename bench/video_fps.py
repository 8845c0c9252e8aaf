"""Frames/s of `mmdata build video` at 1 FPS beside `ffmpeg -vf fps=1` writing JPEGs, same videos, same run.

    .venv/bin/python bench/video_fps.py [--videos 20] [--seconds 60] [--workers 2] [--frame-size N ...]
        [--repeat 2] [--keep DIR]

Videos: ffmpeg's `testsrc2` (moving pattern + clock) at 854x480, 30 fps, H.264, a key frame every 5 s (as on
video sites). Both sides decode the same files and write one JPEG per second of video at the same size
(`--frame-size 0`: the source size; N: longest side N, ffmpeg scaling the same way) with the same number of
processes (`--workers`). mmdata also validates every frame (a full JPEG decode) and writes shards; ffmpeg does
neither. Rounds alternate which side goes first and the best is kept; CPU seconds (of the child processes) are
printed too, since on a shared machine they vary much less than wall time.
Needs the `ffmpeg` binary (apt-get install -y ffmpeg).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mmdata  # noqa: E402


def make_videos(folder: Path, n: int, seconds: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"clip{i:02d}.mp4"
        if not path.is_file():
            tmp = path.with_suffix(".tmp.mp4")
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                            f"testsrc2=size=854x480:rate=30:duration={seconds},hue=h={i * 18}",
                            "-c:v", "libx264", "-preset", "superfast", "-g", "150", "-pix_fmt", "yuv420p", str(tmp)],
                           check=True)
            tmp.rename(path)
        paths.append(path)
    return paths


def run_ffmpeg(videos: list[Path], out: Path, workers: int, frame_size: int) -> int:
    vf = "fps=1" if frame_size <= 0 else \
        f"fps=1,scale='if(gt(iw,ih),{frame_size},-2)':'if(gt(iw,ih),-2,{frame_size})'"

    def one(v: Path) -> int:
        d = out / v.stem
        d.mkdir(parents=True)
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(v), "-vf", vf, "-q:v", "3", str(d / "%05d.jpg")],
                       check=True)
        return len(list(d.iterdir()))

    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(one, videos))


def run_mmdata(videos: list[Path], work: Path, workers: int, frame_size: int, seconds: int) -> int:
    work.mkdir(parents=True, exist_ok=True)
    ann = work / "bench.json"
    ann.write_text(json.dumps([{"id": v.stem, "video": v.name, "conversations": [
        {"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": "A clock runs."}]}
        for v in videos]))
    # The command a user runs, in its own process like ffmpeg. One video per shard keeps both workers busy to the
    # end, like ffmpeg's per-video processes.
    subprocess.run([sys.executable, "-m", "mmdata.cli", "build", "video", "--input", str(ann), "--media-root",
                    str(videos[0].parent), "--task", "video_qa", "--fps", "1", "--max-frames", str(seconds + 1),
                    "--frame-size", str(frame_size), "--workers", str(workers), "--shard-size", "1",
                    "--out", str(work / "out")], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    ds = mmdata.open(work / "out")
    assert ds.manifest.counts["rejected"] == 0, f"{ds.manifest.counts}: `mmdata report {work / 'out'}` says why"
    return sum(len(record.media) for record in ds)


def timed(fn: Callable[[], int]) -> tuple[int, float, float]:
    """(frames, wall seconds, CPU seconds of the child processes): CPU is what a loaded machine does not blur."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    frames = fn()
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return frames, wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> None:
    if shutil.which("ffmpeg") is None:
        sys.exit("bench/video_fps.py: the `ffmpeg` binary (the baseline, and the generator of the test videos) is "
                 "not installed; install it with `apt-get install -y ffmpeg`")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--frame-size", type=int, action="append", help="0: source size (repeatable; default 0 and 384)")
    ap.add_argument("--repeat", type=int, default=2, help="rounds, alternating which side runs first; best kept")
    ap.add_argument("--keep", type=Path, default=None, help="folder to keep (and reuse) the generated videos in")
    args = ap.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("bench/video_fps.py: the ffmpeg binary is needed (baseline and video generation): "
                 "apt-get install -y ffmpeg")
    sizes = args.frame_size or [0, 384]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        videos = make_videos(args.keep or work / "videos", args.videos, args.seconds)
        print(f"{len(videos)} videos of {args.seconds} s, 854x480 30 fps H.264, "
              f"ready in {time.perf_counter() - t0:.1f} s; {args.workers} processes per side")
        print(f"{'':34}{'frames':>7}{'wall s':>8}{'frames/s':>10}{'CPU s':>8}{'frames/CPU s':>14}")
        for size in sizes:
            best: dict[str, tuple[int, float, float]] = {}
            sides = {
                "ffmpeg -vf fps=1": lambda d: run_ffmpeg(videos, d, args.workers, size),
                "mmdata build video": lambda d: run_mmdata(videos, d, args.workers, size, args.seconds),
            }
            for r in range(args.repeat):
                order = list(sides) if r % 2 == 0 else list(sides)[::-1]
                for name in order:
                    res = timed(lambda: sides[name](work / f"{name.split()[0]}-{size}-{r}"))
                    if name not in best or res[1] < best[name][1]:
                        best[name] = res
                    shutil.rmtree(work / f"{name.split()[0]}-{size}-{r}")
            label = "source size" if size <= 0 else f"longest side {size}"
            for name, (frames, wall, cpu) in best.items():
                print(f"{name + ', ' + label:34}{frames:>7}{wall:>8.1f}{frames / wall:>10.1f}{cpu:>8.1f}"
                      f"{frames / cpu:>14.1f}")
            (ff, ff_wall, ff_cpu), (mm, mm_wall, mm_cpu) = best["ffmpeg -vf fps=1"], best["mmdata build video"]
            print(f"{'mmdata / ffmpeg':34}{'':>7}{'':>8}{(mm / mm_wall) / (ff / ff_wall):>9.2f}x{'':>8}"
                  f"{(mm / mm_cpu) / (ff / ff_cpu):>13.2f}x   (target >= 1x)")


if __name__ == "__main__":
    main()
