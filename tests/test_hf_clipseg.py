"""``hf-clipseg`` (segcheck_plugins.hf_models): a tiny random CLIPSeg, its tokenizer and image
processor saved into a folder, tested as a prompted target: offline, strict, normalized from
the folder, one logit map per (image, prompt)."""

import json
import os
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: any download attempt fails
import pytest

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from segcheck import SegcheckError  # noqa: E402
from segcheck import config as segconfig  # noqa: E402
from segcheck.target import TargetSpec, module_meta, resolve  # noqa: E402
from segcheck_plugins import hf_models  # noqa: E402
from segcheck_plugins.synthetic_drywall import PROMPTS  # noqa: E402
from tests.conftest import REPO  # noqa: E402

SPECIAL = ("<pad>", "<unk>", "<bos>", "<eos>")  # ids 0..3
SIDE = 32  # the vision config's image_size; synthetic-drywall's images are 64x64


def _tokenizer():
    """A word-level tokenizer that knows synthetic-drywall's prompt words, wrapped as transformers'."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    words = sorted({w for prompts in PROMPTS.values() for p in prompts for w in p.replace("/", " / ").split()})
    vocab = {w: i for i, w in enumerate((*SPECIAL, *words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def _clipseg(vocab_size: int, seed: int):
    text = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = transformers.CLIPSegConfig(
        text_config=dict(
            text, vocab_size=vocab_size, max_position_embeddings=16, pad_token_id=0, bos_token_id=2, eos_token_id=3
        ),
        vision_config=dict(text, num_hidden_layers=2, image_size=SIDE, patch_size=8),
        projection_dim=16,
        extract_layers=[0, 1],
        reduce_dim=16,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    )
    torch.manual_seed(seed)
    return transformers.CLIPSegForImageSegmentation(config).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(folder, the original module, its tokenizer): model, tokenizer and image processor saved as a user would."""
    folder = tmp_path_factory.mktemp("clipseg")
    tokenizer = _tokenizer()
    original = _clipseg(len(tokenizer), seed=1)  # not what a random-init target (init_seed 0) draws
    images = transformers.ViTImageProcessor(
        image_mean=list(hf_models.CLIP_MEAN), image_std=list(hf_models.CLIP_STD), size={"height": SIDE, "width": SIDE}
    )
    original.save_pretrained(folder)
    transformers.CLIPSegProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder, original, tokenizer


@pytest.fixture(scope="module")
def plugins():
    from segcheck import plugins as segplugins

    return segplugins.load()


def _resolve(plugins, checkpoint, **spec):
    config = segconfig.load(overrides={"eval": {"size": 2}})
    return resolve(plugins, TargetSpec("hf-clipseg", "synthetic-drywall", checkpoint=checkpoint, device="cpu", **spec),
                   config)  # fmt: skip


def _copy(folder, into, skip=()):
    into.mkdir()
    for path in folder.iterdir():
        if path.name not in skip:
            (into / path.name).write_bytes(path.read_bytes())
    return into


def test_a_clipseg_folder_loads_strictly_and_gives_one_logit_map_per_prompt(plugins, saved):
    folder, original, tokenizer = saved
    target = _resolve(plugins, folder)
    model = target.model
    assert model.prompted and model.binary and type(model.module).__mro__[1] is type(original)
    for key, value in original.state_dict().items():
        assert torch.equal(model.module.state_dict()[key], value)
    n = model.normalization  # transformers 5 saves a processor's image settings in processor_config.json
    assert n.mean == pytest.approx(hf_models.CLIP_MEAN) and n.std == pytest.approx(hf_models.CLIP_STD)
    assert n.source.startswith("processor_config.json (its image_processor) of checkpoint folder")
    assert "key prefixes matched exactly" in target.describe()["checkpoint"]

    x = model.normalize(target.data.images)  # (2, 3, 64, 64)
    prompts = target.data.prompts()
    with torch.no_grad():
        logits = model.logits(x, prompts)
        assert logits.shape == (2, 1, 64, 64) and torch.isfinite(logits).all()
        assert model.logits(x[:1], prompts[:1]).shape == (1, 1, 64, 64)  # transformers squeezes batch 1
        assert model.logits(x[:, :, :61, :47], prompts).shape == (2, 1, 61, 47)
        other = model.logits(x, ["segment drywall seam", "segment wall crack"])
        assert not torch.allclose(logits, other)
        # the module is CLIPSeg on the image resized to its image_size, its logits resized back
        tokens = tokenizer(prompts, padding=True, return_tensors="pt")
        small = F.interpolate(x, (SIDE, SIDE), mode="bilinear", align_corners=False)
        expected = original(**tokens, pixel_values=small).logits.reshape(2, 1, SIDE, SIDE)
        expected = F.interpolate(expected, (64, 64), mode="bilinear", align_corners=False)
        assert torch.allclose(model.module(x, prompts), expected, atol=1e-5)
    labels = target.predictions.labels
    assert labels.shape == (2, 64, 64) and set(labels.ravel().tolist()) <= {0, 1}


def test_only_the_decoder_gets_gradients_as_declared(plugins, saved):
    folder, _, _ = saved
    entry = plugins.models.get("hf-clipseg")
    assert entry.meta["binary"] and entry.meta["prompted"] and entry.meta["checkpoint_folder"]
    module = entry.obj(1, config=folder).train()
    frozen = module_meta(entry.meta, module)["frozen"]
    module(torch.randn(2, 3, 40, 40), ["segment crack", "segment taping area"]).square().mean().backward()
    no_gradient = {k for k, p in module.named_parameters() if p.grad is None}
    assert no_gradient == {k for k, _ in module.named_parameters() if k.startswith(frozen)}
    assert any(k.startswith("decoder.") for k, _ in module.named_parameters())


def test_the_image_settings_come_from_preprocessor_config_first_then_processor_config(tmp_path):
    from segcheck.checkpoint import folder_normalization

    processor = {"do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.25] * 3}
    (tmp_path / "processor_config.json").write_text(json.dumps({"image_processor": processor}))
    mean, std, source = folder_normalization(tmp_path)
    assert mean == pytest.approx([0.5] * 3) and std == pytest.approx([0.25] * 3)
    assert source.startswith("processor_config.json (its image_processor) of checkpoint folder")
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({**processor, "image_std": [0.5] * 3}))
    mean, std, source = folder_normalization(tmp_path)
    assert std == pytest.approx([0.5] * 3) and source.startswith("preprocessor_config.json of checkpoint folder")
    (tmp_path / "preprocessor_config.json").unlink()
    (tmp_path / "processor_config.json").write_text(json.dumps({"processor_class": "SomeTextProcessor"}))
    assert folder_normalization(tmp_path) == (None, None, "")
    (tmp_path / "processor_config.json").write_text(json.dumps({"image_processor": [1, 2]}))
    with pytest.raises(SegcheckError, match="processor_config.json is not a JSON object of image processor settings"):
        folder_normalization(tmp_path)


def test_a_folder_with_a_renamed_key_fails_with_one_line(plugins, saved, tmp_path):
    folder = _copy(saved[0], tmp_path / "renamed")
    state = load_file(folder / "model.safetensors")
    key = "decoder.film_mul.weight"
    state["decoder.film_mult.weight"] = state.pop(key)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(SegcheckError) as error:
        _resolve(plugins, folder)
    message = str(error.value)
    assert "\n" not in message and f"missing keys: {key}" in message and "decoder.film_mult.weight" in message


def test_without_a_tokenizer_the_error_says_which_file_and_how_to_write_it(plugins, saved, tmp_path):
    folder = _copy(saved[0], tmp_path / "no-tokenizer", skip=("tokenizer.json", "tokenizer_config.json"))
    with pytest.raises(SegcheckError) as error:
        _resolve(plugins, folder)
    message = str(error.value)
    assert "\n" not in message and "holds no tokenizer (tokenizer.json" in message
    assert "processor.save_pretrained(DIR)" in message


def test_a_folder_is_needed_and_its_config_alone_is_a_random_architecture(plugins, saved):
    folder, original, _ = saved
    with pytest.raises(SegcheckError, match="hf-clipseg is built from a local folder: pass --checkpoint DIR"):
        _resolve(plugins, None)
    target = _resolve(plugins, None, model_args=(("config", str(folder)),))
    weight = target.model.module.decoder.film_mul.weight
    assert weight.shape == original.decoder.film_mul.weight.shape and not torch.equal(
        weight, original.decoder.film_mul.weight
    )


# One gate of the prompted suite, so that the suite has one whatever else is registered for it yet.
def test_the_prompted_suite_runs_end_to_end_on_a_prompted_folder_layout(saved, tmp_path):
    """``pytest suites/prompted --model hf-clipseg --checkpoint DIR --dataset prompted-folder
    --data-root D`` on a generated layout: every prompted gate gives a verdict, none errors."""
    from tests.test_prompted_folder import make_layout, write_yaml

    folder, data = saved[0], tmp_path / "walls"
    make_layout(data)
    write_yaml(data)
    report = tmp_path / "report.json"
    args = [
        "--model",
        "hf-clipseg",
        "--checkpoint",
        str(folder),
        "--dataset",
        "prompted-folder",
        "--data-root",
        str(data),
    ]
    args += ["-p", "no:cacheprovider", "-q", "--eval-size", "4", "--segcheck-report", str(report)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "suites" / "prompted"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode in (0, 1), output
    assert "ERROR" not in done.stdout and "error" not in done.stdout.splitlines()[-1], output
    records = json.loads(report.read_text())["gates"]
    assert all(r["outcome"] in ("passed", "failed", "skipped") for r in records), records
    judged = {r["gate"] for r in records if r["outcome"] in ("passed", "failed")}
    assert {"prompt_metrics", "prompted_collapse", "prompted_noise_input", "prompt_sensitivity"} <= judged, records
    assert "segcheck prompts: foreground per concept and prompt" in done.stdout


def test_without_transformers_hf_clipseg_answers_what_to_install(monkeypatch):
    import importlib.util

    from segcheck import plugins as segplugins

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a)
    )
    monkeypatch.delitem(sys.modules, "segcheck_plugins.hf_models")
    with pytest.raises(SegcheckError) as raised:
        segplugins.load().models.get("hf-clipseg")
    message = str(raised.value)
    assert (
        "\n" not in message and "plugin segcheck_plugins.hf_models is absent" in message and "segcheck[hf]" in message
    )
