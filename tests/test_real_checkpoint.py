"""The ``llava-1.5-7b`` profile on a stand-in of the real checkpoint (issue 16, points 1, 2, 8).

The stand-in (``tests/standin_llava15.py``) has the llava-hf layout of
``llava-hf/llava-1.5-7b-hf`` (sharded float16 weights with the transformers 4.x names, a Llama
BPE tokenizer with byte fallback, the CLIP processor at 336 px, N = 576) at tiny widths; the
fixtures (``tests/real_fixtures.py``) are COCO / POPE / ScienceQA files in their official
formats. The references here are independent of ``visprune.instrument.llava``: LLaVA's
``tokenizer_image_token`` and ``expand2square`` re-implemented from ``llava/mm_utils.py``, the
prompt typed from ``conv_vicuna_v1``'s rule, and transformers' own
``LlavaForConditionalGeneration`` forward.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from real_fixtures import write_real_fixtures
from standin_llava15 import CLIP_MEAN, IMAGE_TOKEN_ID, NUM_PATCHES, build_llava15_standin, build_tokenizer_json
from visprune.instrument import prompts
from visprune.instrument.llava import PrunedLlava, expand_to_square
from visprune.instrument.prompts import CAPTION_PROMPT, pope_question, scienceqa_question

ROOT = Path(__file__).resolve().parents[1]
TOY_MODEL = ROOT / "lib" / "visprune" / "assets" / "toy-llava"
LLAVA_IMAGE_INDEX = -200  # llava/constants.py IMAGE_TOKEN_INDEX
V1_SYSTEM = (  # conv_vicuna_v1.system, typed out
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
QUESTIONS = [
    pope_question("Is there a dog in the image?"),
    scienceqa_question("Which animal is shown in the picture?", ["dog", "cat"], hint="The picture shows a pet."),
    scienceqa_question("Which of these is a vehicle?", ["car", "cup", "chair", "bottle"]),
    CAPTION_PROMPT,
]


def vicuna_v1_prompt(question: str) -> str:
    """conv_vicuna_v1.get_prompt() for one turn with an image: system, sep " ", roles, sep " "."""
    return V1_SYSTEM + " " + "USER: " + "<image>\n" + question + " " + "ASSISTANT:"


def tokenizer_image_token(prompt, tokenizer, image_token_index=LLAVA_IMAGE_INDEX):
    """LLaVA's llava/mm_utils.py tokenizer_image_token, re-implemented (list output)."""
    prompt_chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]

    def insert_separator(x, sep):
        return [ele for sublist in zip(x, [sep] * len(x)) for ele in sublist][:-1]

    input_ids = []
    offset = 0
    if len(prompt_chunks) > 0 and len(prompt_chunks[0]) > 0 and prompt_chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        input_ids.append(prompt_chunks[0][0])
    for x in insert_separator(prompt_chunks, [image_token_index] * (offset + 1)):
        input_ids.extend(x[offset:])
    return input_ids


def numpy_expand2square(image: Image.Image, background) -> Image.Image:
    """expand2square by hand: a NumPy canvas of side max(w, h), the image pasted centred."""
    arr = np.asarray(image.convert("RGB"))
    h, w = arr.shape[:2]
    side = max(w, h)
    canvas = np.empty((side, side, 3), dtype=np.uint8)
    canvas[...] = np.asarray(background, dtype=np.uint8)
    top, left = ((w - h) // 2, 0) if w > h else (0, (h - w) // 2)
    canvas[top : top + h, left : left + w] = arr
    return Image.fromarray(canvas)


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    return build_llava15_standin(tmp_path_factory.mktemp("llava-1.5-7b-hf"))


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict:
    return write_real_fixtures(tmp_path_factory.mktemp("real-data"))


@pytest.fixture(scope="module")
def llava(standin) -> PrunedLlava:
    return PrunedLlava.from_pretrained(standin, device="cpu", dtype=torch.float32)


def _copy(standin: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(standin, out)
    return out


# ------------------------------------------------------------------------------------ loading


def test_standin_has_the_hub_layout_and_loads_without_missing_keys(standin, llava):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    index = json.loads((standin / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2 and not (standin / "model.safetensors").exists()
    names = list(index["weight_map"])
    assert all(n.split(".")[0] in ("language_model", "vision_tower", "multi_modal_projector") for n in names)
    assert "language_model.lm_head.weight" in names and "language_model.model.layers.0.self_attn.q_proj.weight" in names
    assert "multi_modal_projector.linear_1.weight" in names
    assert any(n.startswith("vision_tower.vision_model.encoder.layers.0.") for n in names)
    from safetensors import safe_open

    with safe_open(str(standin / shards[0]), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}

    model, info = LlavaForConditionalGeneration.from_pretrained(standin, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    processor = AutoProcessor.from_pretrained(standin)
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == IMAGE_TOKEN_ID == model.config.image_token_id
    assert processor.tokenizer.pad_token_id == 32001 and model.config.text_config.vocab_size == 32064
    # the wrapper sees the same weights (legacy names converted, nothing left random)
    torch.testing.assert_close(llava.model.lm_head.weight, model.lm_head.weight, rtol=0, atol=0)
    torch.testing.assert_close(
        llava.model.model.vision_tower.encoder.layers[0].self_attn.q_proj.weight,
        model.model.vision_tower.encoder.layers[0].self_attn.q_proj.weight, rtol=0, atol=0,
    )
    assert llava.num_visual_tokens == NUM_PATCHES == 576
    assert llava.prompt_format == prompts.VICUNA_V1


def test_from_pretrained_refuses_weights_with_missing_parameters(standin, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = _copy(standin, tmp_path)
    index_path = broken / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    name = "multi_modal_projector.linear_2.weight"
    shard = broken / index["weight_map"].pop(name)
    tensors = load_file(str(shard))
    del tensors[name]
    save_file(tensors, str(shard), metadata={"format": "pt"})
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError, match="linear_2.weight"):
        PrunedLlava.from_pretrained(broken, device="cpu", dtype=torch.float32)


# ------------------------------------------------------------------------------------ prompts


def test_prompt_is_conv_vicuna_v1(llava):
    for q in QUESTIONS:
        assert llava.build_prompt(q) == vicuna_v1_prompt(q)


@pytest.mark.parametrize("style", ["legacy", "metaspace"])
def test_prompt_ids_equal_tokenizer_image_token(standin, tmp_path, style):
    """Chunk-wise tokenisation as LLaVA's, whichever way the tokenizer.json handles spaces."""
    path = _copy(standin, tmp_path)
    (path / "tokenizer.json").write_text(json.dumps(build_tokenizer_json(style), ensure_ascii=False))
    w = PrunedLlava.from_pretrained(path, device="cpu", dtype=torch.float32)
    tok = w.tokenizer
    for q in QUESTIONS:
        reference = tokenizer_image_token(vicuna_v1_prompt(q), tok)
        assert reference.count(LLAVA_IMAGE_INDEX) == 1
        expected = [IMAGE_TOKEN_ID if t == LLAVA_IMAGE_INDEX else t for t in reference]
        ids = w.prompt_token_ids(q)
        assert ids == expected
        # around the image, as LLaVA-1.5 was trained: ":" "\u2581" <image> "\u2581" "<0x0A>"
        at = ids.index(IMAGE_TOKEN_ID)
        assert tok.convert_ids_to_tokens(ids[at - 2 : at + 3]) == [":", "\u2581", "<image>", "\u2581", "<0x0A>"]
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
        # the language-model inputs hold the same ids with the image id in M consecutive slots
        inputs = w.build_inputs([q], torch.zeros(1, 5, w.config.text_config.hidden_size))
        assert inputs.input_ids[0].tolist() == expected[:at] + [IMAGE_TOKEN_ID] * 5 + expected[at + 1 :]
        assert int(inputs.image_start[0]) == at
    whole = tok(vicuna_v1_prompt(QUESTIONS[0]))["input_ids"]
    chunked = w.prompt_token_ids(QUESTIONS[0])
    if style == "metaspace":  # tokenising the whole prompt loses the "\u2581" after the image
        assert whole != chunked and len(whole) == len(chunked) - 1
    else:
        assert whole == chunked


def test_toy_model_ids_are_unchanged_by_chunkwise_tokenisation():
    """The toy's byte-level tokenizer gives the same ids whole or in chunks (no silent change)."""
    w = PrunedLlava.from_pretrained(TOY_MODEL, device="cpu", dtype=torch.float32)
    questions = QUESTIONS + [pope_question("Is there a cup in the image?"),
                             scienceqa_question("Which object is red?", ["cup", "tree", "ball"], hint="Look.")]
    for q in questions:
        text = prompts.VICUNA_V0_SYSTEM + " USER: <image>\n" + q + " ASSISTANT:"
        assert w.build_prompt(q) == text
        assert w.prompt_token_ids(q) == w.tokenizer(text)["input_ids"]


# ------------------------------------------------------------------------------------ declared formats


def test_declared_prompt_formats():
    assert prompts.read_prompt_format(TOY_MODEL) == prompts.VICUNA_V0
    assert json.loads((TOY_MODEL / "prompt_format.json").read_text()) == {"name": "vicuna_v0"}
    # the toy's chat template renders the declared format
    from visprune.toymodel import build

    assert build.PROMPT_FORMAT == prompts.VICUNA_V0
    assert (TOY_MODEL / "chat_template.jinja").read_text() == build.CHAT_TEMPLATE
    assert prompts.VICUNA_V1.describe() == {
        "name": "vicuna_v1", "system": V1_SYSTEM, "template": "{system} USER: {image}\n{question} ASSISTANT:"
    }
    assert prompts.VICUNA_V1.conversation("Is {x} here?") == vicuna_v1_prompt("Is {x} here?")


def test_standin_without_declaration_reads_vicuna_v1_and_a_declaration_changes_the_prompt(standin, tmp_path, llava):
    assert prompts.read_prompt_format(standin) == prompts.VICUNA_V1
    declared = _copy(standin, tmp_path)
    (declared / "prompt_format.json").write_text('{"name": "vicuna_v0"}')
    assert prompts.read_prompt_format(declared).describe() != prompts.read_prompt_format(standin).describe()
    w = PrunedLlava.from_pretrained(declared, device="cpu", dtype=torch.float32)
    q = QUESTIONS[0]
    assert w.build_prompt(q) == prompts.VICUNA_V0_SYSTEM + " USER: <image>\n" + q + " ASSISTANT:"
    assert w.prompt_token_ids(q) != llava.prompt_token_ids(q)
    # a whole custom format
    custom = {"name": "plain", "system": "", "template": "{system}{image}\n{question}\nAnswer:"}
    (declared / "prompt_format.json").write_text(json.dumps(custom))
    fmt = prompts.read_prompt_format(declared)
    assert fmt.describe() == custom and fmt.conversation("Q?") == "<image>\nQ?\nAnswer:"


@pytest.mark.parametrize("content, message", [
    ("{not json", "not readable JSON"),
    ('["vicuna_v1"]', "expected"),
    ('{"name": "vicuna_v9"}', "unknown prompt format"),
    ('{"name": "mine", "system": "S", "template": "{system} {question}"}', "\\{image\\}"),
    ('{"name": "vicuna_v1", "system": "Something else."}', "known format"),
    ('{"name": "vicuna_v1", "sytem": "typo"}', "unknown fields"),
])
def test_malformed_declaration_raises_naming_the_file(standin, tmp_path, content, message):
    broken = _copy(standin, tmp_path)
    (broken / "prompt_format.json").write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        prompts.read_prompt_format(broken)
    assert "prompt_format.json" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="prompt_format.json"):
        PrunedLlava.from_pretrained(broken, device="cpu", dtype=torch.float32)


def test_read_prompt_format_of_a_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prompts.read_prompt_format(tmp_path / "nowhere")


def test_prompt_format_argument_is_checked(llava):
    with pytest.raises(ValueError, match="prompt_format"):
        PrunedLlava(llava.model, llava.processor, device="cpu", dtype=torch.float32, prompt_format="vicuna_v1")
    w = PrunedLlava(llava.model, llava.processor, device="cpu", dtype=torch.float32, prompt_format=prompts.VICUNA_V0)
    assert w.build_prompt("Q?").startswith(prompts.VICUNA_V0_SYSTEM)


def test_toy_builder_declares_its_format_when_saving(tmp_path):
    from tiny_llava import build_tiny_llava
    from visprune.toymodel import build

    model, processor = build_tiny_llava()
    out = build.save_pretrained(model, processor, tmp_path / "toy")
    assert prompts.read_prompt_format(out) == build.PROMPT_FORMAT


# ------------------------------------------------------------------------------------ images


def _left_edge_image(width=640, height=480) -> Image.Image:
    arr = np.full((height, width, 3), 200, dtype=np.uint8)
    arr[:, :40] = (255, 0, 0)  # a red object along the left edge
    return Image.fromarray(arr)


def _red_fraction(pixels: torch.Tensor) -> float:
    mean = torch.tensor(CLIP_MEAN)[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    rgb = pixels.float().cpu() * std + mean  # (3, H, W) in 0..1
    red = (rgb[0] > 0.8) & (rgb[1] < 0.3) & (rgb[2] < 0.3)
    return float(red.float().mean())


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (501, 300)])
def test_pad_preprocessing_equals_llava_expand2square(llava, size):
    image = _left_edge_image(*size)
    background = tuple(int(x * 255) for x in CLIP_MEAN)
    assert llava.pad_colour == background == (122, 116, 104)
    canvas = numpy_expand2square(image, background)
    assert canvas.size == (max(size), max(size))
    assert np.array_equal(np.asarray(expand_to_square(image, background)), np.asarray(canvas))
    reference = llava.processor.image_processor(images=[canvas], return_tensors="pt")["pixel_values"]
    padded = llava.pixel_values([image])  # default: "pad"
    assert padded.shape == (1, 3, 336, 336)
    torch.testing.assert_close(padded, reference.float(), rtol=0, atol=0)
    # and independently of the processor: PIL bicubic resize to 336, rescale, CLIP normalisation
    resized = np.asarray(canvas.resize((336, 336), Image.BICUBIC), dtype=np.float64) / 255.0
    manual = (resized - np.array(CLIP_MEAN)) / np.array([0.26862954, 0.26130258, 0.27577711])
    torch.testing.assert_close(padded[0].double(), torch.from_numpy(manual.transpose(2, 0, 1)), rtol=0, atol=1e-5)
    # "crop": the processor on the raw image
    cropped = llava.pixel_values([image], preprocess="crop")
    raw = llava.processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(cropped, raw.float(), rtol=0, atol=0)
    if size[0] > size[1]:  # landscape: the centre crop cuts the left-edge object away, padding keeps it
        assert _red_fraction(cropped[0]) == 0.0 and _red_fraction(padded[0]) > 0.02


def test_encode_images_uses_the_preprocessing(llava):
    image = _left_edge_image()
    vision_pad = llava.encode_images([image])
    vision_crop = llava.encode_images([image], preprocess="crop")
    direct = llava.encode_images(llava.pixel_values([image], preprocess="pad"))
    torch.testing.assert_close(vision_pad.features, direct.features, rtol=0, atol=0)
    assert not torch.allclose(vision_pad.features, vision_crop.features)
    with pytest.raises(ValueError, match="preprocess"):
        llava.encode_images([image], preprocess="square")


def test_expand_to_square_rules():
    square = Image.new("RGB", (7, 7), (1, 2, 3))
    assert expand_to_square(square, (0, 0, 0)) is square
    wide = Image.fromarray(np.full((2, 5, 3), 255, dtype=np.uint8))
    out = np.asarray(expand_to_square(wide, (9, 9, 9)))  # offset (0, (5 - 2) // 2) = (0, 1)
    assert out.shape == (5, 5, 3)
    assert (out[1:3] == 255).all() and (out[0] == 9).all() and (out[3:] == 9).all()
    tall = np.full((5, 2, 3), 255, dtype=np.uint8)  # an array works too: offset (1, 0)
    out = np.asarray(expand_to_square(tall, (9, 9, 9)))
    assert (out[:, 1:3] == 255).all() and (out[:, 0] == 9).all() and (out[:, 3:] == 9).all()
    for bad in [(1, 2), (0, 0, 256), (True, 0, 0), "grey"]:
        with pytest.raises(ValueError, match="background"):
            expand_to_square(wide, bad)


def test_pad_rejects_float_arrays(llava):
    with pytest.raises(ValueError, match="preprocess='crop'"):
        llava.pixel_values([np.zeros((20, 30, 3), dtype=np.float32)])


# ------------------------------------------------------------------------------------ logits


def test_unpruned_logits_equal_transformers_forward(standin, fixtures, llava):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    image = Image.open(fixtures["coco_images"] / "COCO_val2014_000000310196.jpg").convert("RGB")
    assert image.size == (640, 480)
    question = pope_question("Is there a chair in the image?")
    processor = AutoProcessor.from_pretrained(standin)
    model = LlavaForConditionalGeneration.from_pretrained(standin, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    canvas = numpy_expand2square(image, tuple(int(x * 255) for x in processor.image_processor.image_mean))
    inputs = processor(text=vicuna_v1_prompt(question), images=canvas, return_tensors="pt")
    reference_ids = tokenizer_image_token(vicuna_v1_prompt(question), processor.tokenizer)
    at = reference_ids.index(LLAVA_IMAGE_INDEX)
    expanded = reference_ids[:at] + [IMAGE_TOKEN_ID] * NUM_PATCHES + reference_ids[at + 1 :]
    assert inputs["input_ids"][0].tolist() == expanded  # processor's ids = LLaVA's, for this tokenizer.json
    with torch.no_grad():
        expected = model(**inputs).logits[0, -1].float()
    logits, keep = llava.first_token_logits([question], [image])
    assert keep.shape == (1, NUM_PATCHES)
    torch.testing.assert_close(logits[0], expected, rtol=1e-4, atol=1e-4)
    # the padded image matters: the cropped one gives other logits
    cropped, _ = llava.first_token_logits([question], llava.encode_images([image], preprocess="crop"))
    assert (cropped[0] - expected).abs().max() > 1e-3


# ------------------------------------------------------------------------------------ end to end


def test_command_line_grid_on_the_real_profile(standin, fixtures, tmp_path, capsys):
    from visprune.__main__ import main

    results = tmp_path / "results"
    args = [
        "grid", "--profile", "llava-1.5-7b", "--model", str(standin),
        "--pope", str(fixtures["pope"]), "--coco-images", str(fixtures["coco_images"]),
        "--coco-annotations", str(fixtures["coco_annotations"]), "--scienceqa", str(fixtures["scienceqa"]),
        "--results", str(results),
        "--datasets", "pope-adversarial", "scienceqa", "chair",
        "--methods", "none", "random", "saliency", "scope", "divprune", "adaptive", "fastv",
        "--budgets", "8", "--device", "cpu", "--no-progress", "--max-new-tokens", "8", "--n-samples", "4",
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    out = captured.out
    # the stand-in's weights are random: its answers carry almost no first-token mass, and the
    # command says so, naming each question-answering run (CHAIR has no answer set)
    warning = [line for line in captured.err.splitlines() if line.startswith("warning: low answer-set mass")]
    assert len(warning) == 14 and all("pope-adversarial" in w or "scienceqa" in w for w in warning), captured.err
    assert all("none" in w or "-k8" in w for w in warning)
    methods = ("none", "random", "saliency", "scope", "divprune", "adaptive", "fastv")
    for method in methods:
        assert method in out
    for dataset, n in (("pope-adversarial", 4), ("scienceqa", 3), ("chair", 4)):  # ScienceQA-IMG: 3 test problems
        runs = sorted((results / dataset).glob("*/done.json"))
        assert len(runs) == len(methods), (dataset, runs)
        for done in runs:
            config = json.loads((done.parent / "config.json").read_text())
            assert config["prompt"] == prompts.VICUNA_V1.describe()
            assert config["config"]["preprocess"] == "pad"
            if dataset == "chair":  # the protocol's knobs, overridden on the command line, are recorded
                assert (config["config"]["n_samples"], config["config"]["max_new_tokens"]) == (4, 8)
            records = [json.loads(line) for f in sorted(done.parent.glob("chunk-*.jsonl"))
                       for line in f.read_text().splitlines() if line.strip()]
            records = [r for r in records if "order" in r]
            assert len(records) == n and all(r.get("error") is None for r in records)
            for r in records:
                if dataset == "chair":
                    assert isinstance(r["caption"], str)
                else:
                    assert abs(sum(r["probs"]) - 1) < 1e-5 and 0 < r["answer_mass"] <= 1


def _readme_real_profile_command() -> list[str]:
    """The README's real-profile command line, continuation lines joined, as an argument list."""
    import shlex

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "-m visprune run --profile llava-1.5-7b" in line)
    command = ""
    for line in lines[start:]:
        command += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            break
    argv = shlex.split(command)
    return argv[argv.index("visprune") + 1:]


def test_the_readme_real_profile_command_works_as_written(standin, fixtures, tmp_path, capsys):
    """The README's command, with its placeholder paths replaced by the stand-in and the
    official-format fixtures; only --results, --device, --n-samples and --no-progress added."""
    from visprune.__main__ import main

    argv = _readme_real_profile_command()
    places = {"/models/llava-1.5-7b-hf": standin, "/data/pope": fixtures["pope"],
              "/data/coco/val2014": fixtures["coco_images"], "/data/coco/annotations": fixtures["coco_annotations"],
              "/data/scienceqa": fixtures["scienceqa"]}
    assert set(places) <= set(argv), argv  # the README still names these paths
    argv = [str(places.get(a, a)) for a in argv]
    results = tmp_path / "results"
    assert main([*argv, "--results", str(results), "--device", "cpu", "--n-samples", "4", "--no-progress"]) == 0
    out = capsys.readouterr().out
    method, k = argv[argv.index("--method") + 1], argv[argv.index("--k") + 1]
    assert f"{method}-k{k}" in out
    assert len(list(results.rglob("done.json"))) == 1


def test_a_pope_run_on_the_real_profile_needs_no_scienceqa_or_annotations(standin, fixtures, tmp_path, capsys):
    from visprune.__main__ import main

    code = main(["run", "--profile", "llava-1.5-7b", "--model", str(standin), "--pope", str(fixtures["pope"]),
                 "--coco-images", str(fixtures["coco_images"]), "--results", str(tmp_path / "r"),
                 "--dataset", "pope-random", "--method", "scope", "--k", "8", "--device", "cpu",
                 "--n-samples", "2", "--no-progress"], )
    assert code == 0, capsys.readouterr().err


def test_chair_protocol_defaults_on_the_real_profile(standin, fixtures, tmp_path):
    """500 images drawn with the sample seed and up to 512 new tokens unless overridden (the
    toy profile: all its test images, 64 tokens); the resolved values enter the run key."""
    from visprune.engine import Evaluator, RunConfig
    from visprune.engine.profiles import resolve_profile

    profile = resolve_profile("llava-1.5-7b", model=standin, coco_images=fixtures["coco_images"],
                              coco_annotations=fixtures["coco_annotations"], results=tmp_path / "r")
    ev = Evaluator(profile, device="cpu", progress=False)
    resolved = ev.resolve(RunConfig("chair", "none"))
    assert (resolved.n_samples, resolved.max_new_tokens, resolved.sample_seed) == (500, 512, 0)
    mine = ev.resolve(RunConfig("chair", "none", n_samples=3, max_new_tokens=16, sample_seed=2))
    assert (mine.n_samples, mine.max_new_tokens, mine.sample_seed) == (3, 16, 2)
    assert resolved.key_dict() != mine.key_dict()
    toy = Evaluator("toy", device="cpu", progress=False).resolve(RunConfig("chair", "none"))
    assert (toy.n_samples, toy.max_new_tokens) == (None, 64)
