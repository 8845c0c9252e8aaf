"""Disk full, read-only outputs, damaged containers and bad options: one clear line naming the path or the option,
and a state the same command resumes from."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import mmdata
from builders.cambrian import CambrianOptions
from mmdata.build.driver import BuildSettings, build
from mmdata.core.errors import StorageError
from mmdata.mix.planner import mix
from mmdata.mix.recipe import load_recipe
from mmdata.testing.images import jpeg_bytes, random_image
from mmdata.testing.llava import make_world
from mmdata.testing.video import write_corrupt_video
from tests.reliability.conftest import run_build, turns, write_jsonl


def _shards(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").iterdir()) if p.suffix in (".jsonl", ".idx")}


def _fail_writes_of(monkeypatch: pytest.MonkeyPatch, name_part: str, code: int) -> None:
    """Every shard file write whose temp name contains `name_part` fails with `code` (ENOSPC, EROFS…)."""
    from mmdata.storage import local as storage

    real = storage._LocalStaged.write

    def write(self: storage._LocalStaged, data: bytes) -> int:
        if name_part in self.tmp.name:
            raise OSError(code, os.strerror(code))
        return real(self, data)

    monkeypatch.setattr(storage._LocalStaged, "write", write)


def test_disk_full_in_a_build_is_one_line_and_the_rerun_resumes(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_world(tmp_path / "src")
    options = CambrianOptions(input=[w.jsonl], media_root=w.media_root)
    reference = tmp_path / "reference"
    build("cambrian", options, BuildSettings(out=reference, shard_size=4))
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _fail_writes_of(m, "000001.jsonl", errno.ENOSPC)
        with pytest.raises(StorageError) as e:
            build("cambrian", options, BuildSettings(out=out, shard_size=4))
    message = str(e.value)
    assert "\n" not in message and f"{out}/shards/000001" in message and "No space left on device" in message
    assert "rerun the same command" in message
    assert (out / "shards" / "000000.done.json").is_file() and not list((out / "shards").glob("*.tmp"))
    build("cambrian", options, BuildSettings(out=out, shard_size=4))
    assert _shards(out) == _shards(reference)


def test_read_only_output_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmdata.cli import app

    w = make_world(tmp_path / "src")
    _fail_writes_of(monkeypatch, ".jsonl", errno.EROFS)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["build", "cambrian", "--input", str(w.jsonl), "--media-root", str(w.media_root),
                                 "--out", str(out), "--quiet"])
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert r.output.startswith(f"error: {out}/shards/000000") and "Read-only file system" in r.output


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs needs root")
def test_a_really_full_disk(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("tmpfs mount not permitted here")
    try:
        root = tmp_path / "img"
        for i in range(12):
            (root / f"{i}.jpg").parent.mkdir(parents=True, exist_ok=True)
            (root / f"{i}.jpg").write_bytes(jpeg_bytes(random_image(96, 96, seed=i), quality=95))
        src = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "image": f"{i}.jpg", "conversations": turns()}
                                                   for i in range(12)])
        options = CambrianOptions(input=[src], media_root=root)
        settings = BuildSettings(out=disk / "out", shard_size=3, copy_media=True)
        with pytest.raises(StorageError, match=rf"^{disk}/out.*No space left on device; free space"):
            build("cambrian", options, settings)
        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
        manifest = build("cambrian", options, settings)
        assert manifest.counts["written"] == 12
        assert [r.meta["orig_id"] for r in mmdata.open(disk / "out")] == list(range(12))
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_disk_full_in_a_mix_is_one_line_and_the_rerun_completes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 code: int) -> None:
    w = make_world(tmp_path / "src")
    build("cambrian", CambrianOptions(input=[w.jsonl], media_root=w.media_root), BuildSettings(out=tmp_path / "d"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nseed: 1\nsize: 30\nsources:\n  - {path: d, weight: 1e-300}\n")  # YAML 1.1 string
    out = tmp_path / "mixtures" / "r"

    def full(*a: object, **k: object) -> None:
        raise OSError(code, os.strerror(code))

    with monkeypatch.context() as m:
        m.setattr(np, "save", full)
        with pytest.raises(StorageError, match=rf"^{out}: {os.strerror(code)}; free space"):
            mix(recipe, out)
    assert not (out / "mixture.json").exists() and not list(out.glob("*.tmp"))
    plan = mix(recipe, out)
    assert plan.total == 30 and (out / "mixture.json").is_file()
    assert load_recipe(recipe).sources[0].weight == 1e-300


def test_damaged_containers_name_the_file(tmp_path: Path) -> None:
    write_corrupt_video(tmp_path / "v" / "broken.mp4")
    ann = tmp_path / "qa.json"
    ann.write_text(json.dumps([{"id": "b", "video": "broken.mp4", "conversations": turns("<video>\nQ?", "A.")}]))
    _, rejects = run_build("video", tmp_path / "out", input=[ann], media_root=tmp_path / "v", task="video_qa")
    assert str(tmp_path / "v" / "broken.mp4") in rejects["qa.json[0]"]
    # An img2dataset shard whose tar has a damaged header in the middle: the members before it are used, the
    # others become rejects naming the tar and the byte.
    shards = tmp_path / "i2d"
    shards.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(4):
            data = jpeg_bytes(random_image(32, 32, seed=i))
            info = tarfile.TarInfo(f"{i:09d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = bytearray(buf.getvalue())
    second = raw.index(b"000000002.jpg")
    raw[second + 124: second + 136] = b"zzzzzzzzzzz\0"  # its size field
    (shards / "00000.tar").write_bytes(bytes(raw))
    pq.write_table(pa.table({"key": [f"{i:09d}" for i in range(4)], "status": ["success"] * 4,
                             "error_message": [None] * 4, "caption": [f"a photo {i}" for i in range(4)],
                             "url": [f"http://x/{i}" for i in range(4)]}), shards / "00000.parquet")
    (shards / "00000_stats.json").write_text("{}")
    ds, rejects = run_build("cc12m", tmp_path / "cc", from_img2dataset=shards)
    assert len(ds) == 2 and len(rejects) == 2
    assert all(f"{shards / '00000.tar'}: damaged tar (bad member header at byte {second})" in r
               for r in rejects.values())


def test_output_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    from trainer.cli import app

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "run").write_text("not a directory")
    r = CliRunner().invoke(app, ["stage1", "--config", str(root / "recipes" / "tiny" / "stage1.yaml"),
                                 "--output_dir", str(tmp_path / "run")])
    assert r.exit_code == 1 and r.output.count("\n") == 1
    assert f"output_dir {tmp_path / 'run'} is a file, not a directory" in r.output


@pytest.mark.parametrize("key, value, match", [
    ("lr", float("nan"), "optim.lr must be a finite number > 0"), ("lr", float("inf"), "optim.lr must be"),
    ("lr", 0.0, "optim.lr must be"), ("min_lr_ratio", 1.5, r"min_lr_ratio must be in \[0, 1\]"),
    ("min_lr_ratio", -0.1, "min_lr_ratio"), ("grad_clip", -1.0, "grad_clip must be >= 0 or null"),
    ("grad_clip", float("inf"), "grad_clip"), ("weight_decay", float("nan"), "weight_decay must be a finite"),
    ("eps", 0.0, "optim.eps"),
])
def test_trainer_options_are_range_checked(key: str, value: float, match: str) -> None:
    from trainer.recipe import ConfigError, OptimSection

    with pytest.raises(ConfigError, match=match):
        OptimSection(**{key: value})
    assert OptimSection(grad_clip=None).grad_clip is None and OptimSection(grad_clip=0.0).grad_clip == 0.0  # none


def test_yaml_numbers_without_a_dot_are_numbers(tmp_path: Path) -> None:
    from trainer.recipe import load_recipe as load_train

    root = Path(__file__).resolve().parents[2]
    text = (root / "recipes" / "tiny" / "stage1.yaml").read_text()
    recipe = tmp_path / "stage1.yaml"
    recipe.write_text(text.replace("lr: 1.0e-3", "lr: 1e-300\n  betas: [9e-1, 999e-3]"))
    got = load_train(recipe, {"output_dir": str(tmp_path / "run")})
    assert got.optim.lr == 1e-300 and got.optim.betas == [0.9, 0.999]
