"""The visualizer end to end on a tiny world: overfit, condition dropout, exact resume, generate → PNG, refusals.

The condition comes from a saved (untrained) unified model: the contract is its config and tower, not its
training. One 4-step run (checkpoints at 2 and 4) is shared by the session.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from trainer.config import ConfigError
from trainer.metrics import read

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "tiny" / "visualizer.yaml"
os.environ.setdefault("MMTRAIN_SHM_COMM", "0")
pytest.importorskip("diffusers")


def _pictures(root: Path, n: int) -> Path:
    """n distinct, smooth pictures (colour ramps and a square) as a built dataset of text → image records."""
    from builders.cambrian import CambrianOptions
    from mmdata.build.driver import BuildSettings, build

    media = root / "media"
    (media / "img").mkdir(parents=True)
    y, x = np.mgrid[0:40, 0:48].astype(np.float32)
    lines = []
    for i in range(n):
        rgb = np.stack([(x * (i + 1) * 5) % 256, (y * (8 - i) * 4) % 256, np.full_like(x, 30 * i)], -1)
        rgb[8 + i:20 + i, 10:22] = 255 - 20 * i
        Image.fromarray(rgb.astype(np.uint8)).save(media / "img" / f"{i}.png")
        lines.append(json.dumps({"id": f"p{i}", "image": f"img/{i}.png", "conversations": [
            {"from": "human", "value": f"Draw picture {i}."}, {"from": "gpt", "value": "<image>"}]}))
    (root / "t2i.jsonl").write_text("\n".join(lines) + "\n")
    build("cambrian", CambrianOptions(input=[root / "t2i.jsonl"], media_root=media), BuildSettings(out=root / "t2i"))
    return root / "t2i"


def _model(tiny, out: Path, **kw) -> Path:
    from tests.trainer.trainer_world import model_config
    from trainer import build_model

    torch.manual_seed(0)
    build_model(model_config(tiny, **kw)).model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def vis_world(tiny, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from trainer.visualizer.tiny import make_tiny_diffusion

    root = tmp_path_factory.mktemp("vis_world")
    return {"root": root, "data": _pictures(root / "data", 8), "model": _model(tiny, root / "s2"),
            "diffusion": make_tiny_diffusion(root / "diffusion")}


def _recipe(world: dict[str, Path], out: Path, **extra: object):
    from trainer.visualizer.config import load_visualizer_recipe

    base = {"output_dir": str(out), "data.source": str(world["data"]), "data.images": "target",
            "condition.from_model": str(world["model"]), "diffusion.pretrained": str(world["diffusion"]),
            "logging.progress": False, "batch.per_device": 4}
    return load_visualizer_recipe(RECIPE, base | extra)


def _train(world: dict[str, Path], out: Path, **extra: object):
    from trainer.visualizer.train import train_visualizer

    return train_visualizer(_recipe(world, out, **extra))


# ZeRO-2 here (the MetaMorph recipe's), ZeRO-0 in the overfit run (the tiny recipe's): resume covers the harder one.
VIS_RUN = {"train.max_steps": 4, "checkpoint.every": 2, "diffusion.cond_dropout": 0.5, "diffusion.noise_offset": 0.1,
           "train.zero_stage": 2}


@pytest.fixture(scope="session")
def vis_run(vis_world: dict[str, Path]) -> Path:
    return _train(vis_world, vis_world["root"] / "runs" / "v", **VIS_RUN).run_dir


def _fixed_loss(net, encoders, pixels, tower_pixels) -> float:
    """The loss on fixed draws (noise, timesteps, no dropout): comparable before and after training."""
    from trainer.visualizer.model import draw

    gen = torch.Generator().manual_seed(123)
    losses = []
    with torch.no_grad():
        lat, tok = encoders.latents(pixels, gen), encoders.tokens(tower_pixels)
        for _ in range(8):
            d = draw(lat, gen, num_train_timesteps=1000, cond_dropout=0.0, noise_offset=0.0)
            losses.append(float(net(lat, tok, d.noise, d.timesteps, d.drop)))
    return sum(losses) / len(losses)


def test_overfits_eight_images(vis_world: dict[str, Path], tmp_path: Path) -> None:
    from mmdata import open as open_dataset
    from mmdata.read.loader import RecordDataset
    from trainer.visualizer.config import resolve_condition
    from trainer.visualizer.data import VisTransform, collate
    from trainer.visualizer.export import build, load_visualizer

    fit = {"train.max_steps": 30, "batch.per_device": 8, "diffusion.cond_dropout": 0.0,
           "optim.schedule": "constant", "optim.lr": 2.0e-3, "checkpoint.every": 1000}
    recipe = _recipe(vis_world, tmp_path / "fit", **fit)
    torch.manual_seed(recipe.train.seed)  # the loop seeds the same way before building: same initial weights
    net, encoders = build(recipe, resolve_condition(recipe.condition))
    data = RecordDataset(open_dataset(recipe.data.source), VisTransform(encoders.processor, 16))
    batch = collate([data[i] for i in range(8)])
    before = _fixed_loss(net.eval(), encoders, batch["pixels"], batch["tower_pixels"])
    _train(vis_world, tmp_path / "fit", **fit)
    vis = load_visualizer(tmp_path / "fit")
    after = _fixed_loss(vis.net, encoders, batch["pixels"], batch["tower_pixels"])
    rows = read(tmp_path / "fit")
    assert [r["samples"] for r in rows] == [8] * 30 and all(r["cond_dropped"] == 0 for r in rows)
    assert after < 0.5 * before, (before, after)


def test_condition_dropout_rate_and_zero_context(vis_world: dict[str, Path], vis_run: Path) -> None:
    from trainer.visualizer.export import load_visualizer
    from trainer.visualizer.model import draw, step_generator

    lat = torch.zeros(20000, 4, 1, 1)
    d = draw(lat, step_generator(0, 0, 0, 0), num_train_timesteps=1000, cond_dropout=0.3, noise_offset=0.0)
    assert abs(float(d.drop.float().mean()) - 0.3) < 0.015
    net = load_visualizer(vis_run).net
    tokens = torch.randn(4, 4, 48)
    ctx = net.condition(tokens, torch.tensor([True, False, True, False]))
    assert torch.equal(ctx[0], torch.zeros_like(ctx[0])) and torch.equal(ctx[2], torch.zeros_like(ctx[2]))
    assert torch.allclose(ctx[1], net.condition(tokens[1:2])[0])
    rows = read(vis_run)  # 4 steps × 4 samples at rate 0.5: some dropped, not all
    assert 0 < sum(r["cond_dropped"] for r in rows) < sum(r["samples"] for r in rows)


def test_kill_and_resume_gives_the_uninterrupted_run(vis_world: dict[str, Path], vis_run: Path,
                                                     tmp_path: Path) -> None:
    run = tmp_path / "resumed"
    shutil.copytree(vis_run, run)
    shutil.rmtree(run / "checkpoints" / "step_00000004")
    (run / "checkpoints" / "latest").write_text("step_00000002")
    shutil.rmtree(run / "export")
    _train(vis_world, run, **VIS_RUN, **{"checkpoint.resume": True})
    full, resumed = read(vis_run), read(run)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(full, resumed):
        assert (a["loss"], a["cond_dropped"], a["samples"]) == (b["loss"], b["cond_dropped"], b["samples"])
    for name in ("projector.safetensors", "unet/diffusion_pytorch_model.safetensors"):
        wa, wb = load_file(str(vis_run / "export" / name)), load_file(str(run / "export" / name))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name


def test_generate_writes_pngs_of_the_configured_size(vis_world: dict[str, Path], vis_run: Path,
                                                     tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from trainer.cli import app

    def run(out: Path, seed: int) -> bytes:
        r = CliRunner().invoke(app, ["generate", "--model", str(vis_world["model"]), "--visualizer",
                                     str(vis_run / "export"), "--prompt", "Draw a red cat.", "--start-image",
                                     "--max-new-tokens", "6", "--steps", "3", "--seed", str(seed), "--out", str(out)])
        assert r.exit_code == 0, r.output
        assert f"image → {out}" in r.output
        return out.read_bytes()

    a = run(tmp_path / "a.png", 0)
    with Image.open(tmp_path / "a.png") as im:
        assert im.size == (16, 16) and im.mode == "RGB"  # diffusion.resolution
    assert run(tmp_path / "b.png", 0) == a  # seeded
    assert run(tmp_path / "c.png", 1) != a


def test_generate_refuses_a_model_with_other_tokens_or_tower(tiny, vis_world: dict[str, Path], vis_run: Path,
                                                             tmp_path: Path) -> None:
    from trainer.tiny import make_tiny
    from trainer.visualizer.render import generate_pictures

    def refused(model: Path, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            generate_pictures(model, "Draw.", out=tmp_path / "x.png", visualizer=vis_run, start_image=True)
        assert not (tmp_path / "x.png").exists()

    refused(_model(tiny, tmp_path / "n16", n=16), r"disagree on the image tokens.*num_image_tokens: 4 vs 16")
    from typer.testing import CliRunner

    from trainer.cli import app

    r = CliRunner().invoke(app, ["generate", "--model", str(tmp_path / "n16"), "--visualizer", str(vis_run),
                                 "--prompt", "Draw.", "--out", str(tmp_path / "x.png")])
    assert r.exit_code == 1 and "error: the visualizer" in r.output and "Traceback" not in r.output
    clip = make_tiny(tmp_path / "clip", vision="clip")
    refused(_model(clip, tmp_path / "m_clip"), r"tower model_type: 'siglip_vision_model' vs 'clip_vision_model'")
    other = make_tiny(tmp_path / "seed1", seed=1)  # same architecture, other weights
    refused(_model(other, tmp_path / "m_seed1"), r"another vision tower .* probe tokens agree at cosine")


def test_recipe_refuses_tokens_other_than_the_models(vis_world: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"condition.num_image_tokens is 16 but the model at .* was trained with 4"):
        from trainer.visualizer.config import resolve_condition

        resolve_condition(_recipe(vis_world, tmp_path, **{"condition.num_image_tokens": 16}).condition)
    with pytest.raises(ConfigError, match="zero_stage 3 is not supported"):
        _recipe(vis_world, tmp_path, **{"train.zero_stage": 3})
    with pytest.raises(ConfigError, match="diffusion.unet_mode: unknown key"):
        _recipe(vis_world, tmp_path, **{"diffusion.unet_mode": "train"})


def test_non_finite_loss_stops_before_saving(vis_world: dict[str, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.train import NonFiniteLoss
    from trainer.visualizer.model import VisualizerNet

    real, calls = VisualizerNet.forward, {"n": 0}

    def poisoned(self, *args, **kwargs):  # from step 3 on (one micro-batch a step)
        calls["n"] += 1
        return real(self, *args, **kwargs) * (float("nan") if calls["n"] > 2 else 1.0)

    monkeypatch.setattr(VisualizerNet, "forward", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"^step 3: loss is nan.*last checkpoint: step_00000002"):
        _train(vis_world, tmp_path / "nan", **{"train.max_steps": 4, "checkpoint.every": 2})
    assert not (tmp_path / "nan" / "export").exists()


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*/visualizer.yaml")), ids=lambda p: p.parent.name)
def test_shipped_recipes_validate(path: Path) -> None:
    from typer.testing import CliRunner

    from trainer.cli import app
    from trainer.visualizer.config import load_visualizer_recipe

    r = load_visualizer_recipe(path)
    assert r.diffusion.pretrained and r.condition.from_model and r.train.zero_stage in (0, 2)
    keys = CliRunner().invoke(app, ["keys", "--visualizer"]).output
    assert "condition.from_model" in keys and "diffusion.cond_dropout" in keys


@pytest.mark.parametrize("kind", ["mlp", "xattn", "transformer"])
def test_projectors_map_tokens_to_the_unet_context(kind: str) -> None:
    from trainer.visualizer.projector import build_condition_projector

    p = build_condition_projector(kind, 48, 32, hidden_dim=64, num_layers=2, num_heads=4, context_tokens=8)
    out = p(torch.randn(3, 4, 48))
    assert out.shape == (3, 8, 32)
    if kind == "mlp":  # N tokens, then zero padding up to the context length
        assert torch.equal(out[:, 4:], torch.zeros(3, 4, 32)) and out[:, :4].abs().sum() > 0


@pytest.mark.slow
def test_two_process_torchrun(vis_world: dict[str, Path], tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "ddp"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
            "trainer.cli", "visualizer", "--config", str(RECIPE), "--output_dir", str(out), "--data.source",
            str(vis_world["data"]), "--data.images", "target", "--condition.from_model", str(vis_world["model"]),
            "--diffusion.pretrained", str(vis_world["diffusion"]), "--train.max_steps", "2",
            "--train.zero_stage", "2", "--logging.progress", "false"]
    from tests.trainer.trainer_world import launcher_env

    p = subprocess.run(args, cwd=ROOT, env=launcher_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = read(out)
    assert [(r["step"], r["samples"]) for r in rows] == [(1, 8), (2, 8)]  # 4 per device × 2 ranks
    assert (out / "export" / "visualizer.json").is_file()


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_the_uninterrupted_run(vis_world: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    """A real kill (SIGKILL, whatever the process was doing), then `--resume`: the same losses as a run never killed."""
    import subprocess
    import sys
    import time

    from tests.trainer.trainer_world import launcher_env

    def args(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "trainer.cli", "visualizer", "--config", str(RECIPE), "--output_dir", str(out),
                "--data.source", str(vis_world["data"]), "--data.images", "target", "--condition.from_model",
                str(vis_world["model"]), "--diffusion.pretrained", str(vis_world["diffusion"]),
                "--train.max_steps", "24", "--checkpoint.every", "3", "--diffusion.cond_dropout", "0.5",
                "--logging.progress", "false", *extra]

    env = launcher_env()
    full = subprocess.run(args(tmp_path / "full"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]
    killed = tmp_path / "killed"
    p = subprocess.Popen(args(killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (killed / "checkpoints" / "latest").is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == -9, "the run ended before it could be killed"
    assert len(read(killed)) < 24
    again = subprocess.run(args(killed, "--resume"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stdout
    a, b = read(tmp_path / "full"), read(killed)
    assert [r["step"] for r in b] == list(range(1, 25))
    assert [(r["loss"], r["cond_dropped"]) for r in a] == [(r["loss"], r["cond_dropped"]) for r in b]


def _feature_cache(model_dir: Path, data: Path, out: Path) -> Path:
    from mmdata import open as open_dataset
    from trainer import load
    from trainer.features import build_cache

    build_cache(load(model_dir).model, open_dataset(data), out, dtype="float32", progress=False)
    return out


def test_cached_vision_features_give_the_live_towers_tokens_and_losses(vis_world: dict[str, Path], vis_run: Path,
                                                                       tmp_path: Path) -> None:
    from mmdata import open as open_dataset
    from mmdata.read.loader import RecordDataset
    from trainer.visualizer.config import resolve_condition
    from trainer.visualizer.data import VisTransform, collate, open_features
    from trainer.visualizer.export import build

    cache = _feature_cache(vis_world["model"], vis_world["data"], tmp_path / "features")
    recipe = _recipe(vis_world, tmp_path / "run", **VIS_RUN, **{"data.vision_features": str(cache)})
    spec = resolve_condition(recipe.condition)
    net, encoders = build(recipe, spec)
    store = open_features(recipe.data.vision_features, encoders.tower, encoders.processor, spec)
    source = open_dataset(recipe.data.source)
    live = collate([RecordDataset(source, VisTransform(encoders.processor, 16))[i] for i in range(8)])
    cached = collate([RecordDataset(source, VisTransform(encoders.processor, 16, features=store))[i]
                      for i in range(8)])
    assert cached["tower_pixels"] is None and torch.equal(cached["pixels"], live["pixels"])
    torch.testing.assert_close(cached["tokens"], encoders.tokens(live["tower_pixels"]), rtol=0, atol=1e-6)
    # The whole loop on cached tokens: the live run's losses, step for step (same draws, same batches).
    _train(vis_world, tmp_path / "run", **VIS_RUN, **{"data.vision_features": str(cache)})
    for a, b in zip(read(vis_run), read(tmp_path / "run")):
        assert (a["samples"], a["cond_dropped"]) == (b["samples"], b["cond_dropped"])
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)


def test_a_feature_cache_of_other_tokens_is_refused(tiny, vis_world: dict[str, Path], tmp_path: Path) -> None:
    from trainer.tiny import make_tiny

    other_n = _feature_cache(_model(tiny, tmp_path / "n16", n=16), vis_world["data"], tmp_path / "f16")
    with pytest.raises(ValueError, match=r"another vision setup \(num_image_tokens: cache 16, now 4\).*"
                                         "condition.from_model"):
        _train(vis_world, tmp_path / "run", **{"data.vision_features": str(other_n)})
    resize = _feature_cache(_model(tiny, tmp_path / "resize", image_aspect_ratio="resize"), vis_world["data"],
                            tmp_path / "fr")
    with pytest.raises(ValueError, match="another vision setup.*image_aspect_ratio: cache 'resize', now 'pad'"):
        _train(vis_world, tmp_path / "run", **{"data.vision_features": str(resize)})
    other_tower = make_tiny(tmp_path / "seed1", seed=1)  # same architecture, other weights
    theirs = _feature_cache(_model(other_tower, tmp_path / "m1"), vis_world["data"], tmp_path / "f1")
    with pytest.raises(ValueError, match="another vision setup.*tower_sha256"):
        _train(vis_world, tmp_path / "run", **{"data.vision_features": str(theirs)})
    assert not (tmp_path / "run" / "checkpoints").exists()


# The first steps on the test world (seed 0, fp32, one rank, one CPU thread), recorded from the loop before it became
# `trainer.loop.Trainer` + subclasses: reorganising the loop must not move a bit. Recorded with torch 2.13 (CPU),
# deepspeed 0.19.8 and the installed diffusers; re-record from a commit whose loop is known good, never from the
# change under test. step → (loss, grad_norm, cond_dropped); ZeRO-0 reports no gradient norm.
PINNED_ZERO2 = [(1.0537785291671753, 2.573185443878174, 1), (1.1051663160324097, 2.19140362739563, 1),
                (0.9504565596580505, 1.6896395683288574, 0), (0.8406938314437866, 1.4342379570007324, 2)]
PINNED_ZERO0 = [(1.0454471111297607, None, 1), (1.094714879989624, None, 0), (0.9429240226745605, None, 0)]


def test_losses_are_bit_identical_to_the_recorded_loop(vis_world: dict[str, Path], vis_run: Path,
                                                       tmp_path: Path) -> None:
    assert [(r["loss"], r["grad_norm"], r["cond_dropped"]) for r in read(vis_run)] == PINNED_ZERO2
    res = _train(vis_world, tmp_path / "z0", **{"train.max_steps": 3, "checkpoint.every": 1000})  # the tiny recipe
    assert [(r["loss"], r["grad_norm"], r["cond_dropped"]) for r in read(res.run_dir)] == PINNED_ZERO0


def test_an_all_skipped_step_runs_on_a_fallback_batch_with_zero_loss(vis_world: dict[str, Path], tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The first micro-batch (p0-p3) holds no usable image: it runs on the first usable record (p4) with loss × 0,
    as in the stages, instead of stopping the run."""
    from trainer.visualizer.data import Skip, VisTransform

    real = VisTransform.__call__

    def call(self: VisTransform, record, dataset):
        broken = record.id.split("@")[0] in ("p0", "p1", "p2", "p3")  # ids are "p0@t2i:1", …
        return Skip(record.id, "media[0] (img/x.png): OSError: broken") if broken else real(self, record, dataset)

    monkeypatch.setattr(VisTransform, "__call__", call)
    res = _train(vis_world, tmp_path / "run", **{"train.max_steps": 2, "train.zero_stage": 2})
    first, second = read(res.run_dir)
    assert (first["samples"], first["skipped"], first["loss"], first["grad_norm"]) == (0, 4, None, 0.0)
    assert second["samples"] == 4 and second["loss"] > 0 and second["grad_norm"] > 0
    logged = [json.loads(line) for line in (res.run_dir / "skipped-rank0.jsonl").read_text().splitlines()]
    assert [s["id"].split("@")[0] for s in logged] == ["p0", "p1", "p2", "p3"]
