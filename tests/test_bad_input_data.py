"""Every bad input to ``python -m visprune.toyworld``, ``python -m visprune.datasets``,
``python -m visprune.toymodel`` and the data and
metric functions gives one clear line naming the thing, and nothing the user owns changes (issue 15).

Command-line cases run the real command in a subprocess (cwd: a fresh temporary folder) and check
the exit status, that stderr is ONE line naming the option or the file, that no traceback
appears, and that the files already there (a pre-made toy world with the user's own files in it,
or a user's folder) hash the same before and after. API cases check the ValueError (or
FileNotFoundError) and that its message names the parameter.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from visprune import metrics as M
from visprune.datasets import __main__ as datasets_cli
from visprune.datasets import build_pope, caption_samples, load_instances, read_pope, read_scienceqa
from visprune.toyworld import __main__ as world_cli
from visprune.toyworld import categories, generate_toyworld, sync, toy_budget

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
INSTANCES = FIXTURES / "coco" / "instances_val2014.json"
COCO_IMAGES = FIXTURES / "coco" / "val2014"
POPE_FILE = FIXTURES / "pope" / "coco_pope_adversarial.json"
SHIPPED_MODEL = REPO / "lib" / "visprune" / "assets" / "toy-llava"
WORLD_PARAMS = ["--n-images", "20", "--split-fractions", "0.5", "0.2", "0.3", "--pope-images", "0"]


def _snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _default_sigint() -> None:
    """In the child: Ctrl-C's default action, whatever the test runner inherited (a shell starts
    background jobs with SIGINT ignored, and Python then never raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("VISPRUNE_DEBUG", None)
    return env


@pytest.fixture(scope="module")
def premade(tmp_path_factory) -> Path:
    """A small toy world made by the command line, with the user's own files in it."""
    base = tmp_path_factory.mktemp("premade")
    root = base / "world"
    done = subprocess.run([sys.executable, "-m", "visprune.toyworld", "--out", str(root), *WORLD_PARAMS],
                          cwd=base, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (root / "notes.txt").write_text("the user's notes\n")
    (root / "images" / "test" / "my_photo.png").write_bytes(b"the user's photo")
    return root


def _setup(kind: str, tmp: Path, premade: Path) -> dict[str, Path]:
    """Files a case needs, under ``tmp``; returns the placeholders for its arguments."""
    places = {"tmp": tmp, "fixture": INSTANCES, "model": SHIPPED_MODEL}
    (tmp / "a_file.txt").write_text("a file, not a folder\n")
    places["file"] = tmp / "a_file.txt"
    user = tmp / "user_folder"
    user.mkdir()
    (user / "thesis.txt").write_text("years of work\n")
    places["user"] = user
    if kind.startswith("world"):
        world = tmp / "world"
        shutil.copytree(premade, world, copy_function=shutil.copy2)
        places["world"] = world
        if kind == "world-foreign-manifest":
            (world / "manifest.json").write_text('{"my": "own manifest"}\n')
        elif kind == "world-user-file-at-generator-path":
            (world / "manifest.json").unlink()
            (world / "annotations" / "captions_test.json").write_text('{"my": "captions"}\n')
    (tmp / "bad_lines.json").write_text('{"images": [], "annotations": [],\n "categories": [1, 2\n')
    places["malformed"] = tmp / "bad_lines.json"
    (tmp / "list.json").write_text("[1, 2, 3]\n")
    places["list_json"] = tmp / "list.json"
    (tmp / "empty_model").mkdir()
    places["empty_model"] = tmp / "empty_model"
    return places


W, P, T = "visprune.toyworld", "visprune.datasets", "visprune.toymodel"
# (id, module, arguments, setup, what stderr must name, exit status)
CLI_CASES = [
    ("toyworld n-images zero", W, ["--out", "{tmp}/w", "--n-images", "0"], "", "--n-images", 2),
    ("toyworld n-images negative", W, ["--out", "{tmp}/w", "--n-images", "-5"], "", "--n-images", 2),
    ("toyworld seed float", W, ["--out", "{tmp}/w", "--seed", "1.5"], "", "--seed", 2),
    ("toyworld seed bool", W, ["--out", "{tmp}/w", "--seed", "True"], "", "--seed", 2),
    ("toyworld seed negative", W, ["--out", "{tmp}/w", "--seed", "-1"], "", "--seed", 2),
    ("toyworld fractions sum", W, ["--out", "{world}", "--split-fractions", "0.5", "0.5", "0.5"], "world",
     "--split-fractions", 2),
    ("toyworld fraction out of range", W, ["--out", "{tmp}/w", "--split-fractions", "1.5", "-0.25", "-0.25"], "",
     "--split-fractions", 2),
    ("toyworld fraction nan", W, ["--out", "{tmp}/w", "--split-fractions", "0.7", "nan", "0.3"], "",
     "--split-fractions", 2),
    ("toyworld two fractions", W, ["--out", "{tmp}/w", "--split-fractions", "0.7", "0.3"], "",
     "--split-fractions", 2),
    ("toyworld text-only one", W, ["--out", "{world}", "--sqa-text-only", "1"], "world", "--sqa-text-only", 2),
    ("toyworld pope-images negative", W, ["--out", "{tmp}/w", "--pope-images", "-1"], "", "--pope-images", 2),
    ("toyworld sqa-per-image word", W, ["--out", "{tmp}/w", "--sqa-per-image", "one"], "", "--sqa-per-image", 2),
    ("toyworld out is a file", W, ["--out", "{file}", *WORLD_PARAMS], "", "{file}", 2),
    ("toyworld out under a file", W, ["--out", "{file}/world", *WORLD_PARAMS], "", "{file}", 2),
    ("toyworld out is the user's folder", W, ["--out", "{user}", *WORLD_PARAMS], "", "{user}", 2),
    ("toyworld foreign manifest", W, ["--out", "{world}", *WORLD_PARAMS, "--force"], "world-foreign-manifest",
     "{world}/manifest.json", 2),
    ("toyworld user file at a generator path", W, ["--out", "{world}", *WORLD_PARAMS],
     "world-user-file-at-generator-path", "captions_test.json", 2),
    ("toyworld split too small for POPE", W, ["--out", "{tmp}/w", "--n-images", "3"], "", "n_images", 2),
    ("no sub-command", P, [], "", "command", 2),
    ("unknown option", W, ["--colour", "red"], "", "--colour", 2),
    ("pope instances missing", P, ["pope", "--instances", "{tmp}/nope.json", "--out-dir", "{tmp}/out"], "", "{tmp}/nope.json", 2),
    ("pope instances malformed", P, ["pope", "--instances", "{malformed}", "--out-dir", "{tmp}/out"], "", "{malformed}, line 3", 2),
    ("pope instances not an object", P, ["pope", "--instances", "{list_json}", "--out-dir", "{tmp}/out"], "", "{list_json}", 2),
    ("pope instances is a folder", P, ["pope", "--instances", "{user}", "--out-dir", "{tmp}/out"], "", "--instances", 2),
    ("pope out-dir is a file", P, ["pope", "--instances", "{fixture}", "--out-dir", "{file}"], "", "--out-dir", 2),
    ("pope n-images negative", P, ["pope", "--instances", "{fixture}", "--out-dir", "{tmp}/o", "--n-images", "-1"], "",
     "--n-images", 2),
    ("pope prefix with a folder", P, ["pope", "--instances", "{fixture}", "--out-dir", "{tmp}/o", "--prefix", "../x_"], "",
     "--prefix", 2),
    ("pope instances required", P, ["pope", "--out-dir", "{tmp}/o"], "", "--instances", 2),
    ("synonyms out is a folder", W, ["synonyms", "--out", "{user}"], "", "--out", 2),
    ("synonyms out under a file", W, ["synonyms", "--out", "{file}/syn.txt"], "", "{file}", 2),
    ("synonyms unknown option", W, ["synonyms", "--colour", "red"], "", "--colour", 2),
    ("train threads zero", T, ["train", "--threads", "0"], "", "--threads", 2),
    ("train out is a file", T, ["train", "--world", "{tmp}/w", "--out", "{file}", "--small"], "", "--out", 2),
    ("train world is the user's folder", T, ["train", "--world", "{user}", "--out", "{tmp}/model", "--small"], "", "{user}", 2),
    ("card model is not a checkpoint", T, ["card", "--model", "{empty_model}", "--world", "{tmp}"], "", "--model", 2),
    ("card world has no toy world", T, ["card", "--model", "{model}", "--world", "{user}", "--captions", "2"], "", "--world", 2),
]


@pytest.mark.parametrize("case,module,args,setup,names,status", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_command_line_bad_input(case, module, args, setup, names, status, tmp_path, premade):
    places = _setup(setup, tmp_path, premade)
    fill = lambda text: re.sub(r"\{(\w+)\}", lambda m: str(places[m.group(1)]), text)
    watched = [p for key, p in places.items() if key in ("world", "user", "model")]
    before = {p: _snapshot(p) for p in watched}
    premade_before = _snapshot(premade)
    done = subprocess.run([sys.executable, "-m", module, *map(fill, args)], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=300)
    lines = done.stderr.splitlines()
    assert done.returncode == status, done.stderr
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert fill(names) in lines[0], lines[0]
    for p in watched:
        assert _snapshot(p) == before[p], f"{p} changed"
    assert _snapshot(premade) == premade_before
    assert not (tmp_path / "w").exists() and not (tmp_path / "o").exists()  # nothing was made


# --------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_during_toyworld_generation(tmp_path, premade):
    """SIGINT to a running generation: one line, exit 130, and no world that passes as complete."""
    root = tmp_path / "w"
    proc = subprocess.Popen([sys.executable, "-m", "visprune.toyworld", "--out", str(root), "--n-images", "2000"],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)  # a background test run would pass SIGINT on ignored
    first = proc.stdout.readline()  # printed once the command has started its work
    assert "checking" in first
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert err.splitlines() == ["interrupted; rerun the same command to resume"]
    assert "Traceback" not in out + err
    manifest = root / "manifest.json"
    assert not manifest.exists() or json.loads(manifest.read_text())["complete"] is False


def test_ctrl_c_while_writing_then_rerun_resumes(tmp_path, monkeypatch, capsys, premade):
    root = tmp_path / "world"
    shutil.copytree(premade, root)
    real = sync._write_file
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sync, "_write_file", interrupted)
    argv = ["--out", str(root), *WORLD_PARAMS, "--seed", "4"]
    assert world_cli.main(argv) == 130
    assert capsys.readouterr().err.splitlines() == ["interrupted; rerun the same command to resume"]
    assert json.loads((root / "manifest.json").read_text())["complete"] is False
    monkeypatch.setattr(sync, "_write_file", real)
    assert world_cli.main(argv) == 0
    assert json.loads((root / "manifest.json").read_text())["params"]["seed"] == 4
    assert (root / "notes.txt").read_text() == "the user's notes\n"
    assert (root / "images" / "test" / "my_photo.png").read_bytes() == b"the user's photo"


def test_ctrl_c_in_toymodel_and_pope_say_start_again(monkeypatch, capsys, tmp_path):
    from visprune.datasets import pope
    from visprune.toymodel import __main__ as model_cli
    from visprune.toymodel import train

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train_toy_llava", stop)
    assert model_cli.main(["train", "--world", str(tmp_path / "w"), "--out", str(tmp_path / "m"), "--small"]) == 130
    monkeypatch.setattr(pope, "build_pope", stop)
    assert datasets_cli.main(["pope", "--instances", str(INSTANCES), "--out-dir", str(tmp_path / "o")]) == 130
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["interrupted; rerun the same command to start again"] * 2
    assert not (tmp_path / "o").exists()


def test_full_disk_is_one_line_naming_the_file(monkeypatch, capsys, tmp_path):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    out = tmp_path / "syn.txt"
    assert world_cli.main(["synonyms", "--out", str(out)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert str(out) in line and "No space left on device" in line
    assert not list(tmp_path.iterdir())  # no partial file, no temporary file


def test_unexpected_error_is_one_line_too(monkeypatch, capsys, tmp_path):
    def bug(*args, **kwargs):
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(categories, "toy_synonyms_text", bug)
    assert world_cli.main(["synonyms", "--out", str(tmp_path / "syn.txt")]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "RuntimeError: a bug over two lines" in err and "Traceback" not in err


# --------------------------------------------------------------------------- the Python API

GOOD_P = np.array([[0.7, 0.3], [0.2, 0.8]])


def _bad_pope_file(tmp: Path) -> Path:
    path = tmp / "coco_pope_random.json"
    path.write_text('{"question_id": 1, "image": "a.jpg", "text": "Is there a cup in the image?", "label": "yes"}\n'
                    '{"question_id": 2, "image": "a.jpg", "text": "Is there a cup in the image?", "label": "maybe"\n')
    return path


def _binary_pope_file(tmp: Path) -> Path:
    path = tmp / "coco_pope_popular.json"
    path.write_bytes(b"\xff\xfe\x00binary")
    return path


def _bad_categories(tmp: Path) -> Path:
    path = tmp / "instances.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": [[1, "cup"]]}))
    return path


def _bad_pid_splits(tmp: Path) -> Path:
    root = tmp / "sqa"
    shutil.copytree(FIXTURES / "scienceqa", root)
    (root / "pid_splits.json").write_text(json.dumps({"test": "1,2,3"}))
    return root


# (id, call taking the temporary folder, text the message must contain)
API_CASES = [
    ("pope_scores prediction 2", lambda t: M.pope_scores([0, 2], [0, 1]), "pred:"),
    ("pope_scores label 2", lambda t: M.pope_scores([0, 1], [0, 2]), "labels:"),
    ("pope_scores bool predictions", lambda t: M.pope_scores([True, False], [0, 1]), "pred:"),
    ("pope_scores bool tensor labels", lambda t: M.pope_scores(torch.tensor([0, 1]), torch.tensor([True, False])), "labels:"),
    ("pope_scores three columns", lambda t: M.pope_scores(np.full((2, 3), 1 / 3), [0, 1]), "pred:"),
    ("pope_scores positive 2", lambda t: M.pope_scores([0, 1], [0, 1], positive=2), "positive:"),
    ("accuracy mixed bool list", lambda t: M.accuracy([True, 0], [1, 0]), "pred:"),
    ("accuracy label beyond columns", lambda t: M.accuracy(GOOD_P, [0, 2]), "labels:"),
    ("ece bool labels", lambda t: M.ece(GOOD_P, np.array([True, False])), "labels:"),
    ("brier bool probabilities", lambda t: M.brier(np.array([[True, False], [False, True]]), [0, 1]), "probs:"),
    ("precision bool positive", lambda t: M.precision([0, 1], [0, 1], positive=True), "positive:"),
    ("classwise_ece bool class_index", lambda t: M.classwise_ece(GOOD_P, [0, 1], class_index=False), "class_index:"),
    ("bin_index NaN", lambda t: M.bin_index(np.array([0.5, np.nan]), 5), "confidence:"),
    ("bootstrap bool seed", lambda t: M.bootstrap_ci(np.mean, [1.0, 2.0], seed=True), "seed:"),
    ("bootstrap negative seed", lambda t: M.bootstrap_ci(np.mean, [1.0, 2.0], seed=-3), "seed:"),
    ("generate_toyworld bool n_images", lambda t: generate_toyworld(t / "w", n_images=True), "n_images"),
    ("generate_toyworld bool pope_images", lambda t: generate_toyworld(t / "w", pope_images=True), "pope_images"),
    ("generate_toyworld bool fraction", lambda t: generate_toyworld(t / "w", split_fractions=(True, 0, 0)), "split_fractions"),
    ("toy_budget bool", lambda t: toy_budget(True), "k_real"),
    ("build_pope bool seed", lambda t: build_pope(INSTANCES, "random", seed=True), "seed"),
    ("build_pope bool n_images", lambda t: build_pope(INSTANCES, "random", n_images=True), "n_images"),
    ("caption_samples negative seed", lambda t: caption_samples(INSTANCES, COCO_IMAGES, n=2, seed=-1), "seed"),
    ("read_pope bad line", lambda t: read_pope(_bad_pope_file(t), COCO_IMAGES), "coco_pope_random.json, line 2"),
    ("read_pope binary file", lambda t: read_pope(_binary_pope_file(t), COCO_IMAGES), "coco_pope_popular.json, line 1"),
    ("read_pope missing file", lambda t: read_pope(t / "coco_pope_random.json", COCO_IMAGES), "coco_pope_random.json"),
    ("load_instances category not an object", lambda t: load_instances(_bad_categories(t)), "categories[0]"),
    ("read_scienceqa split not a list", lambda t: read_scienceqa(_bad_pid_splits(t), "test"), "pid_splits.json"),
]


@pytest.mark.parametrize("case,call,names", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input(case, call, names, tmp_path):
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        call(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert names in message, message
    if names.endswith(":"):  # metric messages start with the argument's name
        assert message.startswith(names)
    assert not (tmp_path / "w").exists()


def test_valid_inputs_keep_their_values():
    """The stricter checks change no value: POPE scores by hand, and the same for floats holding integers."""
    pred, labels = [0, 0, 1, 0, 1, 1], [0, 1, 1, 0, 0, 1]  # TP = 2 (0, 3), FP = 1 (1), FN = 1 (4)
    scores = M.pope_scores(pred, labels)
    assert scores == {"accuracy": 4 / 6, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "yes_ratio": 3 / 6}
    assert M.pope_scores(np.array(pred, dtype=float), torch.tensor(labels)) == scores
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2], [0.4, 0.6], [0.1, 0.9]])  # argmax = pred
    assert M.pope_scores(probs, labels) == scores
    assert M.aurc([0.9, 0.8], [True, False]) == M.aurc([0.9, 0.8], [1, 0])  # correctness may be bool
