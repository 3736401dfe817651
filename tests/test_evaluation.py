"""The evaluation engine: end-to-end runs, per-image reuse, caching, kill-and-resume, validation.

Runs on a small toy world (generated in a temporary folder) with a tiny random LLaVA saved in
the llava-hf layout, through the toy profile with its model and world paths overridden.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from visprune import engine as evaluation
from visprune.engine import Evaluator, RunConfig, plan_chunks, read_chunk, summarize, write_chunk
from visprune.engine.profiles import resolve_profile

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from tiny_llava import engine_assets

    return engine_assets(tmp_path_factory.mktemp("engine"), n_images=60, seed=3)


def _profile(assets, results):
    return resolve_profile("toy", model=assets / "model", world=assets / "world", results=results)


def test_pope_run_records(assets, tmp_path):
    ev = Evaluator(_profile(assets, tmp_path), progress=False)
    table = ev.run(RunConfig("pope-random", "scope", 4, {"alpha": 0.5}, n_samples=24, chunk_size=12))
    assert len(table) == 24 and (table["status"] == "ok").all()
    assert list(table["order"]) == list(range(24))
    probs = np.stack(table["probs"].map(np.asarray).to_list())
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert (table["prediction"] == probs.argmax(axis=1)).all()
    assert (table["correct"] == (table["prediction"] == table["label"])).all()
    np.testing.assert_allclose(table["confidence"], probs.max(axis=1))
    assert (table["tokens_kept"] == 4).all() and (table["k"] == 4).all() and (table["alpha"] == 0.5).all()
    assert ((table["answer_mass"] > 0) & (table["answer_mass"] <= 1)).all()
    assert (table["erank_kept"] <= 4 + 1e-6).all() and (table["erank_kept"] >= 1).all()
    # the same image gives the same image statistics on every question about it
    per_image = table.groupby("image_id")[["erank_image", "attn_entropy"]].nunique()
    assert (per_image == 1).all().all()
    summary = summarize(table)
    assert summary["n"] == 24 and summary["accuracy"] == pytest.approx(table["correct"].mean())
    assert {"ece", "brier", "aurc", "f1", "yes_ratio"} <= set(summary)


def test_unpruned_scores_equal_the_wrapper_called_directly(assets, tmp_path):
    """Batching, chunking and per-image reuse do not change what a sample's score is."""
    ev = Evaluator(_profile(assets, tmp_path), progress=False, batch_size=5)
    table = ev.run(RunConfig("pope-popular", n_samples=12, chunk_size=7))
    samples = evaluation.load_samples(ev.profile, RunConfig("pope-popular", n_samples=12))
    llava = ev.llava
    for i in (0, 5, 11):
        vision = llava.encode_images([samples[i].load_image()])
        out = llava.score([samples[i].prompt], [samples[i].answers], vision, llava.select_tokens(vision, "none"))
        np.testing.assert_allclose(table.loc[i, "probs"], out.probs[0, :2].numpy(), atol=1e-5)


def test_vision_work_is_done_once_per_image(assets, tmp_path, monkeypatch):
    ev = Evaluator(_profile(assets, tmp_path), progress=False, batch_size=4)
    calls = []
    original = type(ev.llava).encode_images

    def counting(self, images, **kwargs):
        calls.append(len(images))
        return original(self, images, **kwargs)

    monkeypatch.setattr(type(ev.llava), "encode_images", counting)
    table = ev.run(RunConfig("pope-adversarial", "saliency", 6, n_samples=30, chunk_size=12))
    assert sum(calls) == table["image_id"].nunique() == 5  # POPE: 6 questions per image


def test_cache_hit_does_not_load_the_model(assets, tmp_path):
    config = RunConfig("scienceqa", "random", 5, {"seed": 1}, n_samples=8)
    first = Evaluator(_profile(assets, tmp_path), progress=False).run(config)
    again = Evaluator(_profile(assets, tmp_path), progress=False)
    second = again.run(config)
    assert again._llava is None
    pd.testing.assert_frame_equal(first, second)
    stored = json.loads(next((tmp_path / "scienceqa").glob("*/config.json")).read_text())
    assert stored["run_config"]["method"] == "random" and stored["config"]["params"] == {"feature_space": "vision", "seed": 1}


def test_different_configuration_different_cache(assets, tmp_path):
    ev = Evaluator(_profile(assets, tmp_path), progress=False)
    ev.run(RunConfig("pope-random", "scope", 4, {"alpha": 1.0}, n_samples=6))
    ev.run(RunConfig("pope-random", "scope", 4, {"alpha": 0.0}, n_samples=6))
    assert len(list((tmp_path / "pope-random").iterdir())) == 2


def test_corrupt_chunk_is_redone(assets, tmp_path):
    ev = Evaluator(_profile(assets, tmp_path), progress=False)
    config = RunConfig("pope-random", n_samples=18, chunk_size=6)
    first = ev.run(config)
    folder = next((tmp_path / "pope-random").iterdir())
    chunk = folder / "chunk-00001.jsonl"
    chunk.write_text(chunk.read_text()[:-40])  # truncated, as if killed while writing in place
    (folder / "done.json").unlink()
    second = ev.run(config)
    pd.testing.assert_frame_equal(first, second)
    assert read_chunk(chunk) is not None


def test_chunk_checksum_detects_edits(tmp_path):
    path = tmp_path / "c.jsonl"
    write_chunk(path, [{"sample_id": "1", "x": 0.5}, {"sample_id": "2", "x": 1.0}])
    assert [r["sample_id"] for r in read_chunk(path, ["1", "2"])] == ["1", "2"]
    assert read_chunk(path, ["1", "3"]) is None
    path.write_text(path.read_text().replace("0.5", "0.6"))
    assert read_chunk(path) is None


def test_plan_chunks_keeps_images_whole():
    class S:
        def __init__(self, image_id):
            self.image_id = image_id

    samples = [S(i // 6) for i in range(30)] + [S(1)]  # a late question about image 1
    chunks = plan_chunks(samples, 10)
    for chunk in chunks:
        ids = {samples[p].image_id for p in chunk}
        assert all(all(samples[q].image_id not in ids for q in other) for other in chunks if other is not chunk)
    assert sorted(p for c in chunks for p in c) == list(range(31))


def test_failed_image_is_recorded_not_dropped(assets, tmp_path):
    import shutil

    world = tmp_path / "world"
    shutil.copytree(assets / "world", world)
    profile = resolve_profile("toy", model=assets / "model", world=world, results=tmp_path / "results")
    samples = evaluation.load_samples(profile, RunConfig("pope-random", n_samples=12))
    samples[0].image_path.write_bytes(b"not a png")
    table = Evaluator(profile, progress=False).run(RunConfig("pope-random", n_samples=12))
    failed = table[table["status"] == "failed"]
    assert len(failed) == 6 and failed["error"].str.contains(samples[0].image_path.name).all()
    summary = summarize(table)
    assert summary["n"] == 12 and summary["n_failed"] == 6


def test_chair_run(assets, tmp_path):
    ev = Evaluator(_profile(assets, tmp_path), progress=False)
    table = ev.run(RunConfig("chair", "divprune", 4, n_samples=3, max_new_tokens=6))
    assert len(table) == 3 and table["caption"].map(lambda c: isinstance(c, str)).all()
    truth = evaluation.chair_truth(ev.profile)
    summary = summarize(table, ground_truth=truth, synonyms=ev.profile.chair_synonyms)
    assert {"chair_s", "chair_i", "recall", "length"} <= set(summary)


@pytest.mark.parametrize(
    "config, word",
    [
        (RunConfig("pope-random", "scope", 0), "k"),
        (RunConfig("pope-random", "scope", 10_000), "k"),
        (RunConfig("pope-random", "scope", 4, {"alpha": -1.0}), "alpha"),
        (RunConfig("pope-random", "scope", 4, {"gap_power": 0.0}), "gap_power"),
        (RunConfig("pope-random", "nope", 4), "method"),
        (RunConfig("pope-random", "none", 4), "k"),
        (RunConfig("pope-random", "fastv", 4, {"layer": 99}), "layer"),
        (RunConfig("pope-random", "adaptive", 4), "erank_ref"),
        (RunConfig("coco", "none"), "dataset"),
        (RunConfig("pope-random", n_samples=0), "n_samples"),
    ],
)
def test_invalid_configuration_rejected_before_model_load(assets, tmp_path, config, word):
    ev = Evaluator(_profile(assets, tmp_path), progress=False)
    with pytest.raises(ValueError, match=word):
        ev.run(config)
    assert ev._llava is None
    assert not (tmp_path / config.dataset).exists()


def test_grid_is_tidy(assets, tmp_path):
    ev = Evaluator(_profile(assets, tmp_path), progress=False)
    grid = ev.grid([RunConfig("pope-random", n_samples=6),
                    RunConfig("pope-random", "scope", 4, {"alpha": 0.0, "gap_power": 2.0}, n_samples=6),
                    RunConfig("pope-random", "fastv", 4, {"layer": 1}, n_samples=6)])
    assert len(grid) == 18
    assert set(grid["method"]) == {"none", "scope", "fastv"}
    assert grid.loc[grid["method"] == "scope", "gap_power"].eq(2.0).all()
    assert grid.loc[grid["method"] == "fastv", "layer"].eq(1).all()
    assert grid.loc[grid["method"] == "none", "k"].eq(16).all()  # all N tokens of the tiny model


def _cli(assets, results, *extra):
    return [sys.executable, "-m", "visprune", "run", "--model", str(assets / "model"), "--world",
            str(assets / "world"), "--results", str(results), "--no-progress", *extra]


@pytest.mark.parametrize("kill_after", [1, 3])
def test_kill_and_resume_equals_uninterrupted(assets, tmp_path, kill_after):
    args = ["--dataset", "pope-random", "--method", "scope", "--k", "4", "--n-samples", "36", "--chunk-size", "6",
            "--batch-size", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    proc = subprocess.Popen(_cli(assets, tmp_path / "killed", *args), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    folder = tmp_path / "killed" / "pope-random"
    while time.time() < deadline and len(list(folder.glob("*/chunk-*.jsonl"))) < kill_after:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = list(folder.glob("*/chunk-*.jsonl"))
    assert kill_after <= len(written) < 6, "the run should have been killed part-way (6 chunks in all)"
    assert not list(folder.glob("*/done.json"))

    profile = _profile(assets, tmp_path / "killed")
    config = RunConfig("pope-random", "scope", 4, {}, n_samples=36, chunk_size=6)
    resumed = Evaluator(profile, progress=False, batch_size=2).run(config)
    fresh = Evaluator(_profile(assets, tmp_path / "fresh"), progress=False, batch_size=2).run(config)
    pd.testing.assert_frame_equal(resumed, fresh)
    assert resumed["sample_id"].is_unique and len(resumed) == 36


def test_cli_grid_measures_erank_ref_for_adaptive(assets, tmp_path, capsys):
    from visprune.__main__ import main

    code = main(["grid", "--model", str(assets / "model"), "--world", str(assets / "world"), "--results",
                 str(tmp_path), "--no-progress", "--datasets", "pope-random", "--methods", "saliency", "adaptive",
                 "--budgets", "4", "--n-samples", "6"])
    out = capsys.readouterr().out
    assert code == 0 and "adaptive-k4-erank_ref" in out and "saliency-k4" in out


def test_cli_prints_metrics_and_rejects_bad_input(assets, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    ok = subprocess.run(_cli(assets, tmp_path, "--dataset", "pope-random", "--method", "saliency", "--k", "4",
                             "--n-samples", "6"), env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "accuracy" in ok.stdout and "saliency-k4" in ok.stdout
    bad = subprocess.run(_cli(assets, tmp_path, "--dataset", "pope-random", "--method", "scope", "--k", "4",
                              "-P", "alpha=-2"), env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "alpha" in bad.stderr and "Traceback" not in bad.stderr


def test_two_processes_give_the_one_process_table(assets, tmp_path):
    """``accelerate launch`` with 2 CPU processes: one shard each, merged into the one cache."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib"), "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "visprune", "run",
              "--model", str(assets / "model"), "--world", str(assets / "world"), "--results", str(tmp_path / "two"),
              "--no-progress", "--dataset", "pope-random", "--method", "scope", "--k", "4",
              "--n-samples", "36", "--chunk-size", "6"]
    done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("scope-k4") == 1  # only the first process prints
    manifest = json.loads(next((tmp_path / "two" / "pope-random").glob("*/done.json")).read_text())
    assert manifest["processes"] == 2
    config = RunConfig("pope-random", "scope", 4, {}, n_samples=36, chunk_size=6)
    reader = Evaluator(_profile(assets, tmp_path / "two"), progress=False)
    merged = reader.run(config)
    assert reader._llava is None  # the merged cache is complete: nothing was recomputed
    single = Evaluator(_profile(assets, tmp_path / "one"), progress=False).run(config)
    pd.testing.assert_frame_equal(merged, single)


def test_same_configuration_gives_identical_records(assets, tmp_path):
    config = RunConfig("pope-random", "random", 4, {"seed": 7}, n_samples=18, chunk_size=6)
    first = Evaluator(_profile(assets, tmp_path / "a"), progress=False).run(config)
    second = Evaluator(_profile(assets, tmp_path / "b"), progress=False, batch_size=3).run(config)
    # another batch size pads prompts differently, which moves logits by float rounding only
    # (BLAS kernels differ between CPUs): the float lists agree to rounding, everything else exactly
    lists = ["probs", "answer_logits"]
    pd.testing.assert_frame_equal(first.drop(columns=lists), second.drop(columns=lists))
    for column in lists:
        a = np.array(first[column].to_list(), dtype=float)
        b = np.array(second[column].to_list(), dtype=float)
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    other = Evaluator(_profile(assets, tmp_path / "c"), progress=False).run(
        RunConfig("pope-random", "random", 4, {"seed": 8}, n_samples=18, chunk_size=6))
    assert not np.allclose(np.stack(first["probs"].to_list()), np.stack(other["probs"].to_list()))


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--dataset", "pope-random", "--method", "scope", "--k", "0"], ["k"]),
        (["--dataset", "pope-random", "--method", "scope", "--k", "999"], ["k", "999"]),
        (["--dataset", "pope-random", "--method", "scope", "--k", "4", "-P", "gap_power=0"], ["gap_power"]),
        (["--dataset", "pope-random", "--method", "fastv", "--k", "4", "-P", "layer=50"], ["layer"]),
        (["--dataset", "pope-random", "--method", "saliency", "--k", "4", "-P", "alpha=1"], ["alpha"]),
        (["--dataset", "pope-random", "--method", "none", "--k", "4"], ["k"]),
    ],
)
def test_cli_bad_configuration_messages(assets, tmp_path, capsys, extra, words):
    from visprune.__main__ import main

    code = main(["run", "--model", str(assets / "model"), "--world", str(assets / "world"),
                 "--results", str(tmp_path), "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert all(w in err for w in words), err


def test_cli_missing_files_name_the_path(assets, tmp_path, capsys, monkeypatch):
    from visprune.__main__ import main

    for name in ("MODEL", "COCO_IMAGES", "COCO_ANNOTATIONS", "POPE", "SCIENCEQA"):
        monkeypatch.delenv(f"VISPRUNE_{name}", raising=False)
    code = main(["run", "--model", str(tmp_path / "no-model"), "--world", str(assets / "world"),
                 "--results", str(tmp_path), "--dataset", "pope-random"])
    assert code == 2 and str(tmp_path / "no-model") in capsys.readouterr().err
    code = main(["run", "--profile", "llava-1.5-7b", "--model", str(assets / "model"), "--pope", str(tmp_path / "pope"),
                 "--coco-images", str(tmp_path), "--coco-annotations", str(tmp_path), "--scienceqa", str(tmp_path),
                 "--results", str(tmp_path), "--dataset", "pope-adversarial", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "coco_pope_adversarial.json" in err and "POPE" in err
    code = main(["run", "--profile", "llava-1.5-7b", "--dataset", "pope-random"])
    err = capsys.readouterr().err
    assert code == 2 and "VISPRUNE_" in err


# ------------------------------------------------------------------------------ run identity (issue 15)


def _copy_model(assets, dest):
    import shutil

    shutil.copytree(assets / "model", dest)
    return dest


def test_weights_changed_in_place_are_another_model(assets, tmp_path):
    """A same-size weight file with flipped bytes is not served the old model's records."""
    model = _copy_model(assets, tmp_path / "model")
    profile = resolve_profile("toy", model=model, world=assets / "world", results=tmp_path / "r")
    config = RunConfig("pope-random", "saliency", 4, n_samples=12, chunk_size=6)
    first = Evaluator(profile, progress=False).run(config)
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    size = len(data)
    for offset in range(size - 4000, size - 8, 4):  # the tail of the last tensor, as in place damage
        data[offset : offset + 4] = np.float32(0.5).tobytes()
    weights.write_bytes(bytes(data))
    assert weights.stat().st_size == size
    again = Evaluator(profile, progress=False)
    second = again.run(config)
    assert again._llava is not None  # the changed checkpoint was loaded, not looked up
    assert len(list((tmp_path / "r" / "pope-random").iterdir())) == 2
    assert not np.allclose(np.stack(first["probs"].to_list()), np.stack(second["probs"].to_list()))


def test_equivalent_parameters_share_one_run(assets, tmp_path):
    ev = Evaluator(_profile(assets, tmp_path), progress=False)
    samples = evaluation.load_samples(ev.profile, RunConfig("pope-random", n_samples=6))
    keys = {ev.run_key(RunConfig("pope-random", "scope", 4, params, n_samples=6), samples)[0]
            for params in ({}, {"alpha": 1.0}, {"alpha": 1}, {"alpha": 1, "gap_power": 1.0})}
    assert len(keys) == 1
    assert ev.run_key(RunConfig("pope-random", "scope", 4, {"alpha": 0.5}, n_samples=6), samples)[0] not in keys
    assert RunConfig("pope-random", "scope", 4, {"alpha": 1}).label() == RunConfig("pope-random", "scope", 4).label()
    assert evaluation.complete_params("scope", {"alpha": 1}) == {"alpha": 1.0, "feature_space": "vision",
                                                                 "gap_power": 1.0}
    with pytest.raises(ValueError, match="alpha.*boolean"):
        evaluation.complete_params("scope", {"alpha": True})
    with pytest.raises(ValueError, match="alpah: not a parameter of method 'scope'"):
        evaluation.complete_params("scope", {"alpah": 0.5})


def test_dtype_is_resolved_before_the_key(assets, tmp_path):
    """The key computed before the model loads is the key after it loaded (no "half" vs "bfloat16")."""
    ev = Evaluator(_profile(assets, tmp_path), progress=False)
    config = RunConfig("pope-random", "random", 4, n_samples=6)
    samples = evaluation.load_samples(ev.profile, config)
    before = ev.run_key(config, samples)
    ev.llava  # noqa: B018 (loads the model)
    assert ev.run_key(config, samples) == before
    assert before[1]["dtype"] == str(ev.llava.dtype).replace("torch.", "")


def test_prompt_format_is_part_of_the_key(assets, tmp_path):
    from visprune.instrument import prompts

    model = _copy_model(assets, tmp_path / "model")
    ev = Evaluator(resolve_profile("toy", model=model, world=assets / "world", results=tmp_path / "r"), progress=False)
    config = RunConfig("pope-random", n_samples=6)
    samples = evaluation.load_samples(ev.profile, config)
    key, description = ev.run_key(config, samples)
    assert description["prompt"] == prompts.read_prompt_format(model).describe()
    declared = [p for p in model.iterdir() if "prompt" in p.name and p.suffix == ".json"]
    other = prompts.VICUNA_V0 if prompts.read_prompt_format(model).name != prompts.VICUNA_V0.name else prompts.VICUNA_V1
    (declared[0] if declared else model / "prompt_format.json").write_text(json.dumps({"name": other.name}))
    ev2 = Evaluator(ev.profile, progress=False)
    assert ev2.run_key(config, samples)[0] != key


def test_chunk_of_another_run_copied_in_is_redone(assets, tmp_path):
    ev = Evaluator(_profile(assets, tmp_path), progress=False)
    a = RunConfig("pope-random", "random", 4, {"seed": 1}, n_samples=12, chunk_size=6)
    b = RunConfig("pope-random", "random", 4, {"seed": 2}, n_samples=12, chunk_size=6)
    table_a, table_b = ev.run(a), ev.run(b)
    folders = {p.name.split("-")[2]: p for p in (tmp_path / "pope-random").iterdir()}
    (folders["seed2"] / "chunk-00000.jsonl").write_bytes((folders["seed1"] / "chunk-00000.jsonl").read_bytes())
    again = Evaluator(_profile(assets, tmp_path), progress=False)
    pd.testing.assert_frame_equal(again.run(b), table_b)
    assert again.last_computed == [0]
    assert not table_a["probs"].equals(table_b["probs"])


def test_failed_records_are_retried_by_the_next_run(assets, tmp_path):
    import shutil

    world = tmp_path / "world"
    shutil.copytree(assets / "world", world)
    profile = resolve_profile("toy", model=assets / "model", world=world, results=tmp_path / "results")
    config = RunConfig("pope-random", n_samples=12, chunk_size=6)
    samples = evaluation.load_samples(profile, config)
    good = samples[0].image_path.read_bytes()
    samples[0].image_path.write_bytes(b"not a png")
    ev = Evaluator(profile, progress=False)
    first = ev.run(config)
    assert (first["status"] == "failed").sum() == 6
    still = ev.run(config)  # still broken: retried, and reported again, never dropped
    assert ev.last_computed == [0] and (still["status"] == "failed").sum() == 6
    samples[0].image_path.write_bytes(good)  # repaired
    repaired = ev.run(config)
    assert ev.last_computed == [0] and (repaired["status"] == "ok").all()
    fresh = Evaluator(resolve_profile("toy", model=assets / "model", world=world, results=tmp_path / "fresh"),
                      progress=False).run(config)
    pd.testing.assert_frame_equal(repaired, fresh)
    ev.run(config)
    assert ev.last_computed == []  # nothing failed: served from the cache


# ------------------------------------------------------------------------------ processes and kills


DRIVER = r"""
import os, signal, sys
from visprune import engine as evaluation
from visprune.engine import cache as runcache
moment, log = sys.argv[1], sys.argv[2]
argv = sys.argv[3:]
state = {"chunks": 0, "computed": 0}
def die():
    os.kill(os.getpid(), signal.SIGKILL)
real_write = runcache.write_atomic
def write_atomic(path, data):
    name = path.name
    if name.startswith("chunk-"):
        state["chunks"] += 1
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {name}\n")
        if moment == "writing" and state["chunks"] == 2:   # half of chunk 2 in its temporary file
            path.with_name(f".{name}.{os.getpid()}.deadbeef.tmp").write_text(data[: len(data) // 2])
            die()
        if moment == "torn" and state["chunks"] == 2:      # chunk 2 half-written in place
            path.write_text(data[: len(data) // 2])
            die()
    if moment == "config" and name == "config.json":      # before any chunk: a half config
        path.with_name(f".{name}.{os.getpid()}.deadbeef.tmp").write_text(data[:10])
        die()
    if moment == "done" and name == "done.json":          # every chunk written, no done.json
        die()
    return real_write(path, data)
runcache.write_atomic = write_atomic
real_compute = evaluation.Evaluator._compute
def compute(self, *args, **kwargs):
    state["computed"] += 1
    if moment == "computing" and state["computed"] == 3:  # inside chunk 3's forward passes
        die()
    return real_compute(self, *args, **kwargs)
evaluation.Evaluator._compute = compute
from visprune.__main__ import main
sys.exit(main(argv))
"""

KILL_ARGS = ["--dataset", "pope-random", "--method", "scope", "--k", "4", "--n-samples", "36", "--chunk-size", "6",
             "--batch-size", "2"]


def _driver(assets, results, moment, log, *extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", DRIVER, moment, str(log), "run", "--model", str(assets / "model"), "--world",
           str(assets / "world"), "--results", str(results), "--no-progress", *KILL_ARGS, *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _chunk_bytes(results) -> dict:
    (folder,) = list((Path(results) / "pope-random").iterdir())
    return {p.name: p.read_bytes() for p in sorted(folder.glob("chunk-*.jsonl"))}


@pytest.fixture(scope="module")
def uninterrupted(assets, tmp_path_factory):
    results = tmp_path_factory.mktemp("uninterrupted")
    proc = _driver(assets, results, "none", results / "log.txt")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return results, out


@pytest.mark.parametrize("moment", ["config", "computing", "writing", "torn", "done"])
def test_kill_at_five_moments_then_resume_equals_uninterrupted(assets, tmp_path, uninterrupted, moment):
    """SIGKILL at five moments of a run; rerunning the same command gives the uninterrupted records, byte for byte."""
    reference, reference_out = uninterrupted
    results = tmp_path / "r"
    killed = _driver(assets, results, moment, tmp_path / "log.txt")
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    folder = next((results / "pope-random").iterdir())
    assert not (folder / "done.json").exists()
    written = sorted(p.name for p in folder.glob("chunk-*.jsonl"))
    expected_written = {"config": 0, "computing": 2, "writing": 1, "torn": 2, "done": 6}[moment]
    assert len(written) == expected_written, written  # the kill happened where it was meant to
    resumed = _driver(assets, results, "none", tmp_path / "log2.txt")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert _chunk_bytes(results) == _chunk_bytes(reference)
    assert out == reference_out  # the printed metrics too
    assert not list(folder.glob(".*.tmp"))  # stale temporaries cleaned up
    recomputed = (tmp_path / "log2.txt").read_text().splitlines() if (tmp_path / "log2.txt").exists() else []
    assert len(recomputed) == 6 - (expected_written - (moment == "torn"))  # finished chunks are kept


def test_two_processes_on_one_command_share_the_work(assets, tmp_path, uninterrupted):
    """Two copies of one command on one results folder: each chunk computed once, one correct cache."""
    reference, reference_out = uninterrupted
    log = tmp_path / "log.txt"
    procs = [_driver(assets, tmp_path / "r", "none", log) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    assert all(out == reference_out for out, _ in outs)
    written = [line.split()[1] for line in log.read_text().splitlines()]
    assert sorted(written) == [f"chunk-{i:05d}.jsonl" for i in range(6)]  # no chunk computed twice
    assert _chunk_bytes(tmp_path / "r") == _chunk_bytes(reference)
