"""Hugging Face transformers semantic-segmentation models as ``hf:<Class>``, built offline.

Every class of :data:`MODELS` (those returning ``.logits`` (B, C, h, w)) is registered as
``hf:<Class>``, e.g. ``hf:SegformerForSemanticSegmentation``. Nothing is downloaded, ever: a
model is built as ``Class(config)`` from a local ``config.json`` and its weights are loaded by
segcheck's strict loader (never ``from_pretrained``, which fetches hub names, resizes heads
and skips keys). The architecture comes from

* ``--model-arg config=path/to/config.json`` (or a folder holding one): an architecture;
  its head gets the dataset's classes (``num_labels = num_classes``), its weights are random
  unless ``--checkpoint`` gives a weights file;
* ``--checkpoint FOLDER``, a ``save_pretrained`` folder (``config.json`` and
  ``model.safetensors``, or sharded ``model.safetensors.index.json``, or ``pytorch_model.bin``
  read weights-only): segcheck passes it as ``config=FOLDER``. A folder that holds weights is
  the trained model: it is built exactly as its config says (its ``num_labels``: a head that
  does not fit the dataset fails ``head_matches_classes`` with both numbers instead of being
  resized), its ``architectures`` must name the class, and its weights must fit one to one
  (key prefixes matched exactly; transformers' own renamings of saved names, e.g. Segformer's
  ``decode_head.linear_c`` for ``decode_head.linear_projections``, are applied). The folder's
  ``preprocessor_config.json`` gives the normalization (``segcheck.checkpoint.folder_normalization``)
  and its ``do_flip_channel_order`` (MobileViT: BGR inputs) is applied by the module; its
  sidecar, if any, is ``FOLDER/segcheck.yaml`` (classes, mean, std, as a file's sidecar).

A config that names a hub backbone (``backbone`` without ``backbone_config``) or asks for
pretrained backbone weights is refused: transformers would download them. Fresh copies (gates
that train) are random-init models of the same config. :func:`local_files` lists the files of
a local model folder (config, preprocessor, tokenizer files) for plugins that need more of them.

``hf-clipseg`` is transformers' CLIPSegForImageSegmentation as a text-prompted binary model
(``prompted=True``): ``--checkpoint FOLDER`` holds the model and its processor, both saved with
``save_pretrained`` (config.json, weights, the processor's image settings with CLIP's
normalization: preprocessor_config.json, or processor_config.json as transformers 5 writes it,
and the tokenizer: tokenizer.json, or vocab.json and merges.txt); its ``forward(x, prompts)``
tokenizes the prompts, resizes inputs to ``vision_config.image_size`` and returns logits
(B, 1, H, W) at the input size. Its CLIP encoders are frozen (CLIPSeg runs them under
``no_grad`` and trains only its decoder). Its weights load strictly: the module is a subclass
of the transformers class, so its state dict is the folder's, key for key.

Inputs: DPT reshapes its tokens to a square grid, so inputs are padded (replicate) to a
square whose side is a multiple of the patch size and the logits cropped back;
Data2VecVision reshapes them to ``config.image_size``, so inputs are resized to it and the
logits resized back to the input size. Parameters that segcheck's loss never reaches (the
auxiliary heads transformers trains only with ``labels``, encoder layers after the last
``out_indices``, DPT's unused first fusion residual) are declared ``frozen``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if importlib.util.find_spec("transformers") is None:  # the plugin is then absent, with a note (segcheck.plugins)
    raise ImportError("segcheck_plugins.hf_models needs transformers: pip install 'segcheck[hf]'")

import torch
import torch.nn.functional as F

from segcheck import SegcheckError
from segcheck import checkpoint as ckpt
from segcheck.hookspecs import hookimpl

__all__ = [
    "EXCLUDED",
    "MODELS",
    "LocalFiles",
    "build",
    "build_clipseg",
    "local_files",
    "module_names",
    "read_config",
]


def _patch(config) -> int:
    size = config.patch_size
    return int(size if isinstance(size, int) else max(size))


def _dpt_multiple(config) -> int:
    """DPT's input multiple: its patch size times the largest downscale of its reassemble stage
    (factor 0.5: a stride-2 convolution on the patch grid), so every fused feature map lines up."""
    return _patch(config) * max(1, round(1 / min(config.reassemble_factors)))


def _aux(module) -> tuple[str, ...]:
    """The auxiliary head transformers trains only when given ``labels`` (segcheck's loss never reaches it)."""
    return ("auxiliary_head.",) if getattr(module, "auxiliary_head", None) is not None else ()


def _layers_after(module, last_used: int) -> tuple[str, ...]:
    """Parameter prefixes of the encoder layers after layer ``last_used`` (0-based): their
    output feeds nothing the logits depend on."""
    n, base = module.config.num_hidden_layers, module.base_model_prefix + "."
    lists = [
        name
        for name, m in module.named_modules()
        if isinstance(m, torch.nn.ModuleList)
        and len(m) == n
        and name.startswith(base)
        and name.rsplit(".", 1)[-1] in ("layer", "layers")
    ]
    if len(lists) != 1:
        raise SegcheckError(
            f"{type(module).__name__}: found {len(lists)} encoder layer lists of {n} layers ({lists}); "
            "segcheck_plugins.hf_models cannot tell which layers the logits use"
        )
    return tuple(f"{lists[0]}.{i}." for i in range(last_used + 1, n))


def _beit_frozen(module) -> tuple[str, ...]:
    # the features are hidden_states[i - 1] for i in out_indices, and hidden_states[k] is layer k - 1's output
    return _aux(module) + _layers_after(module, max(module.config.out_indices) - 2)


def _dpt_frozen(module) -> tuple[str, ...]:
    # the features are layer i's outputs for i in backbone_out_indices; the first fusion layer (deepest map) has no
    # residual input, and the final layernorm makes only last_hidden_state, which the head does not read
    base = module.base_model_prefix
    unused = (f"{base}.layernorm.", "neck.fusion_stage.layers.0.residual_layer1.")
    layers = () if module.config.is_hybrid else _layers_after(module, max(module.config.backbone_out_indices))
    return _aux(module) + unused + layers


@dataclass(frozen=True)
class Info:
    """What segcheck needs to know of one class: its input constraint (``divisible_by``, a
    function of the config), the parameters its logits never reach (``frozen``, of the module),
    how inputs are fitted to it (``fit``: None, ``"square"`` or ``"config_size"``) and a
    ``note`` on that for ``segcheck list``."""

    divisible_by: Callable[[object], int] = lambda config: 32
    frozen: Callable[[torch.nn.Module], tuple[str, ...]] = lambda module: ()
    fit: str | None = None
    note: str = ""


#: the semantic-segmentation classes of transformers (``MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES``) registered here
MODELS: dict[str, Info] = {
    "SegformerForSemanticSegmentation": Info(lambda config: math.prod(config.strides)),
    "UperNetForSemanticSegmentation": Info(frozen=_aux),
    "DPTForSemanticSegmentation": Info(_dpt_multiple, _dpt_frozen, fit="square", note="padded to a square"),
    "BeitForSemanticSegmentation": Info(_patch, _beit_frozen),
    "Data2VecVisionForSemanticSegmentation": Info(
        lambda config: 1, _beit_frozen, fit="config_size", note="resized to config.image_size"
    ),
    "MobileViTForSemanticSegmentation": Info(),
    "MobileViTV2ForSemanticSegmentation": Info(),
    "MobileNetV2ForSemanticSegmentation": Info(frozen=lambda module: (f"{module.base_model_prefix}.conv_1x1.",)),
}
#: transformers' other semantic-segmentation classes, and why they are not registered
EXCLUDED = {
    "Sapiens2ForSemanticSegmentation": "its checkpoints need transformers' tensor conversions (WeightConverter)",
    "Tipsv2DptForSemanticSegmentation": "its checkpoints need transformers' tensor conversions (WeightConverter)",
}
CONFIG = "config.json"
#: the files of a local model folder that :func:`local_files` lists (tokenizers: for prompted models)
KNOWN_FILES = (
    CONFIG,
    ckpt.PREPROCESSOR,
    ckpt.PROCESSOR,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)


@dataclass(frozen=True)
class LocalFiles:
    """A local Hugging Face model: its ``config`` (config.json), the ``folder`` it lies in, the
    :data:`KNOWN_FILES` present there (``{name: path}``) and, for a ``save_pretrained`` folder,
    its ``weights`` (empty for a config.json given as a file, or a folder without weights)."""

    folder: Path
    config: Path
    files: dict[str, Path]
    weights: tuple[Path, ...] = ()

    @property
    def trained(self) -> bool:
        """Whether this is a saved model (its head is the trained one), not just an architecture."""
        return bool(self.weights)


def local_files(path: str | Path) -> LocalFiles:
    """The files of ``path``: a config.json file (an architecture) or a folder holding one (a
    ``save_pretrained`` folder when it also holds weights). Only reads the folder's listing."""
    path = Path(path)
    if path.is_dir():
        folder, config = path, path / CONFIG
        if not config.is_file():
            raise SegcheckError(
                f"{path} holds no {CONFIG}; give a save_pretrained folder or --model-arg config=path/to/config.json"
            )
        has_weights = any((path / name).is_file() for name in ckpt.FOLDER_WEIGHTS)
        weights = tuple(ckpt.folder_weight_files(path)) if has_weights else ()
    elif path.is_file():
        folder, config, weights = path.parent, path, ()
    else:
        raise SegcheckError(f"model config {path} does not exist; give a config.json or a save_pretrained folder")
    files = {name: folder / name for name in KNOWN_FILES if (folder / name).is_file()}
    return LocalFiles(folder, config, files, weights)


def _dicts(value, where: str = ""):
    """Every mapping nested in ``value`` (a parsed JSON document), with where it lies."""
    if isinstance(value, dict):
        yield where or "top level", value
        for key, inner in value.items():
            yield from _dicts(inner, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _dicts(inner, f"{where}[{i}]")


def read_config(path: Path, model_type: str | None = None) -> dict:
    """The mapping in config.json ``path``, checked: of ``model_type`` when it says one, and
    nothing in it that would make transformers download (a hub backbone name without its
    ``backbone_config``, pretrained backbone weights)."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SegcheckError(f"model config {path} is not readable JSON ({exc}); give a config.json") from exc
    if not isinstance(raw, dict):
        raise SegcheckError(f"model config {path} is not a JSON object; give a config.json")
    if model_type is not None and raw.get("model_type", model_type) != model_type:
        raise SegcheckError(
            f"model config {path} is a {raw['model_type']!r} config, not {model_type!r}; "
            "pick the hf: model of its class (its 'architectures'), or give that model's config"
        )
    for where, mapping in _dicts(raw):
        if mapping.get("use_pretrained_backbone") or (mapping.get("backbone") and not mapping.get("backbone_config")):
            raise SegcheckError(
                f"model config {path} ({where}) names backbone {mapping.get('backbone')!r} without its "
                "backbone_config, or asks for use_pretrained_backbone: transformers would download it, and segcheck "
                "builds offline only; write the backbone's config as backbone_config and use_pretrained_backbone: false"
            )
    return raw


def build(name: str, num_classes: int, *, config: str | Path | None = None) -> torch.nn.Module:
    """transformers' ``name`` built as ``Class(config)`` from the local ``config`` (see the module
    docstring for which head size it gets); random weights, nothing downloaded."""
    if config is None:
        raise SegcheckError(
            f"hf:{name} is built from a local config: pass --model-arg config=path/to/config.json, or "
            "--checkpoint a save_pretrained folder (nothing is downloaded)"
        )
    import transformers

    cls = getattr(transformers, name, None)
    if cls is None:
        raise SegcheckError(f"hf:{name}: transformers {transformers.__version__} has no {name}; upgrade transformers")
    files = local_files(config)
    settings = _settings(cls, name, files)
    if not files.trained:  # an architecture: its head is sized for the dataset
        settings.num_labels = num_classes
    module = cls(settings)
    info = MODELS[name]
    if info.fit == "square":
        _fit_to_square(module, info.divisible_by(settings))
    elif info.fit == "config_size":
        _fit_to_config_size(module, settings.image_size)
    if files.trained and _flips_channels(files):
        module.register_forward_pre_hook(_bgr, with_kwargs=True)
    return module


def _settings(cls, name: str, files: LocalFiles):
    """The config of transformers class ``cls`` (called ``name``) read from ``files``, checked
    (:func:`read_config`); a folder with weights must have been saved from ``name``."""
    raw = read_config(files.config, cls.config_class.model_type)
    if files.trained and raw.get("architectures") and name not in raw["architectures"]:
        raise SegcheckError(
            f"checkpoint folder {files.folder} was saved from {raw['architectures']} (its {CONFIG}), not {name}; "
            "test it as that class, or save the model you mean to test"
        )
    try:
        return cls.config_class.from_dict(raw)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise SegcheckError(
            f"model config {files.config} is not a valid {cls.config_class.__name__} ({type(exc).__name__}: {first})"
        ) from exc


def _flips_channels(files: LocalFiles) -> bool:
    """Whether the folder's image processor feeds the model BGR (``do_flip_channel_order``, MobileViT)."""
    path = files.files.get(ckpt.PREPROCESSOR)
    if path is None:
        return False
    try:
        return json.loads(path.read_text()).get("do_flip_channel_order") is True
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise SegcheckError(f"{path} is not a readable JSON object ({exc}); fix or delete it") from exc


def _with_input(args, kwargs, change):
    """(args, kwargs) of a forward call with its ``pixel_values`` replaced by ``change(pixel_values)``."""
    if args:
        return (change(args[0]), *args[1:]), kwargs
    return args, {**kwargs, "pixel_values": change(kwargs["pixel_values"])}


def _bgr(module, args, kwargs):
    return _with_input(args, kwargs, lambda x: x.flip(1))


def _fit_to_square(module: torch.nn.Module, patch: int) -> None:
    """Pad inputs (replicate) at the bottom and right to a square whose side is a multiple of
    ``patch``; crop the logits back to the input's part."""
    sizes: list[tuple[int, int, int]] = []

    def pad(x):
        h, w = x.shape[-2:]
        side = -(-max(h, w) // patch) * patch
        sizes.append((h, w, side))
        return F.pad(x, (0, side - w, 0, side - h), mode="replicate") if (h, w) != (side, side) else x

    def crop(module, args, kwargs, output):
        h, w, side = sizes.pop()
        oh, ow = output.logits.shape[-2:]
        output["logits"] = output.logits[..., : math.ceil(h * oh / side), : math.ceil(w * ow / side)]
        return output

    module.register_forward_pre_hook(lambda m, args, kwargs: _with_input(args, kwargs, pad), with_kwargs=True)
    module.register_forward_hook(crop, with_kwargs=True)


def _fit_to_config_size(module: torch.nn.Module, image_size) -> None:
    """Resize inputs (bilinear) to ``image_size``; resize the logits back to the input size."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    sizes: list[tuple[int, int]] = []

    def resize(x):
        sizes.append(tuple(x.shape[-2:]))
        return x if tuple(x.shape[-2:]) == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def back(module, args, kwargs, output):
        original = sizes.pop()
        if original != size:
            output["logits"] = F.interpolate(output.logits, size=original, mode="bilinear", align_corners=False)
        return output

    module.register_forward_pre_hook(lambda m, args, kwargs: _with_input(args, kwargs, resize), with_kwargs=True)
    module.register_forward_hook(back, with_kwargs=True)


def module_names(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with its saved (hub) key names renamed to ``model``'s own, by transformers'
    renaming rules for the class (transformers 5 renames some modules in memory); a key that is
    already one of the model's names is kept. Only renamings: a key that needs one of
    transformers' tensor conversions, or two keys that become one name, raise. No prefix is
    added or removed."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import PrefixChange, WeightConverter, WeightRenaming, rename_source_key
    except ImportError:  # transformers 4: checkpoints hold the module's own names
        return state
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming) and not isinstance(t, PrefixChange)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    expected = model.state_dict()
    renamed: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    for key in sorted(state):
        new, conversion = (key, None) if key in expected else rename_source_key(key, renamings, converters)
        if conversion is not None:
            raise SegcheckError(
                f"checkpoint key {key!r} needs transformers' tensor conversion {conversion!r} for "
                f"{type(model).__name__}, which segcheck's strict loader does not apply"
            )
        if new in renamed:
            raise SegcheckError(f"checkpoint keys {sources[new]!r} and {key!r} both name the model's {new!r}")
        renamed[new], sources[new] = state[key], key
    return renamed


CLIPSEG = "CLIPSegForImageSegmentation"
#: the tokenizer a CLIPSeg folder needs: one of these sets of files (``processor.save_pretrained`` writes them)
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))
#: CLIP's normalization (transformers' OPENAI_CLIP_MEAN/STD), what CLIPSeg's image processor uses
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def build_clipseg(num_classes: int, *, config: str | Path | None = None) -> torch.nn.Module:
    """``hf-clipseg``: transformers' CLIPSegForImageSegmentation and its tokenizer from the local
    folder ``config`` (a ``save_pretrained`` folder, or a folder or config.json beside its
    tokenizer files: an architecture with random weights), nothing downloaded; called as
    ``forward(x, prompts)`` (:func:`_prompted_clipseg`)."""
    if config is None:
        raise SegcheckError(
            "hf-clipseg is built from a local folder: pass --checkpoint DIR (model.save_pretrained(DIR); "
            "processor.save_pretrained(DIR)), or --model-arg config=DIR for its architecture (nothing is downloaded)"
        )
    if num_classes != 1:
        raise SegcheckError(f"hf-clipseg has one sigmoid channel; it was asked for {num_classes} classes")
    import transformers

    files = local_files(config)
    settings = _settings(transformers.CLIPSegForImageSegmentation, CLIPSEG, files)
    return _prompted_clipseg()(settings, _tokenizer(files))


def _tokenizer(files: LocalFiles):
    """The tokenizer saved in ``files.folder``, read offline; a one-line error when it holds none."""
    if not any(all(name in files.files for name in names) for names in TOKENIZER_FILES):
        raise SegcheckError(
            f"{files.folder} holds no tokenizer (tokenizer.json, or vocab.json and merges.txt); hf-clipseg needs "
            "the one its text encoder was trained with: write it with processor.save_pretrained(DIR) "
            "(CLIPSegProcessor, or its tokenizer) into the model's folder"
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(files.folder), local_files_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise SegcheckError(
            f"the tokenizer in {files.folder} does not load ({type(exc).__name__}: {first}); re-save it with "
            "processor.save_pretrained(DIR)"
        ) from exc


@functools.cache
def _prompted_clipseg() -> type:
    """CLIPSegForImageSegmentation as a segcheck prompted model: a subclass (so its state dict
    is the saved folder's, key for key) holding its tokenizer, whose ``forward(x, prompts)``
    tokenizes the prompts (padded, with their attention mask, on x's device), resizes ``x`` to
    the vision config's ``image_size`` (CLIPSeg's decoder reshapes its tokens to a square grid of
    the trained size, as its image processor resizes) and returns logits (B, 1, H, W) resized
    back to x's size. The CLIP encoders run under ``no_grad`` (CLIPSeg trains only its decoder)."""
    import transformers

    class PromptedCLIPSeg(transformers.CLIPSegForImageSegmentation):
        def __init__(self, config, tokenizer):
            super().__init__(config)
            self.tokenizer = tokenizer

        def forward(self, x: torch.Tensor, prompts: list[str]) -> torch.Tensor:
            text = self.config.text_config
            tokens = self.tokenizer(
                list(prompts),
                padding=True,
                truncation=True,
                max_length=text.max_position_embeddings,
                return_tensors="pt",
            )
            side = self.config.vision_config.image_size
            size = (side, side) if isinstance(side, int) else tuple(side)
            fed = x if tuple(x.shape[-2:]) == size else F.interpolate(x, size, mode="bilinear", align_corners=False)
            out = super().forward(
                input_ids=tokens["input_ids"].to(x.device),
                attention_mask=tokens["attention_mask"].to(x.device),
                pixel_values=fed,
            )
            logits = out.logits.reshape(len(x), 1, *out.logits.shape[-2:])  # (h, w) or (B, h, w) as transformers gives
            if logits.shape[-2:] != x.shape[-2:]:
                logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
            return logits

    return PromptedCLIPSeg


@hookimpl
def segcheck_load_checkpoint(model, path):
    """Weights for a transformers model (a file or a save_pretrained folder), with its saved names
    renamed to the module's (:func:`module_names`), then loaded strictly by ``segcheck.checkpoint``."""
    transformers = sys.modules.get("transformers")
    if transformers is None or not isinstance(model, transformers.PreTrainedModel):
        return None
    return ckpt.load_state(model, module_names(model, ckpt.read_state_dict(path)), path)


def _divisible_by(name: str, module) -> int:
    return int(MODELS[name].divisible_by(module.config))


def _frozen(name: str, module) -> tuple[str, ...]:
    return tuple(MODELS[name].frozen(module))


@hookimpl
def segcheck_register_models(registry):
    for name, info in MODELS.items():
        note = f"; inputs {info.note}" if info.note else ""
        registry.add(
            f"hf:{name}",
            functools.partial(build, name),
            checkpoint_folder=True,
            divisible_by=functools.partial(_divisible_by, name),
            frozen=functools.partial(_frozen, name),
            args={"config": "local config.json (or its folder): the architecture, its head sized for the dataset"},
            description=f"transformers {name} from a local config or save_pretrained folder, offline{note}",
        )
    registry.add(
        "hf-clipseg",
        build_clipseg,
        binary=True,
        prompted=True,
        checkpoint_folder=True,
        mean=CLIP_MEAN,
        std=CLIP_STD,
        frozen=("clip.",),
        args={"config": "local CLIPSeg folder (config.json and tokenizer files): the architecture, random weights"},
        description="transformers CLIPSegForImageSegmentation, text-prompted, from a save_pretrained folder holding "
        "its tokenizer (model and processor saved there), offline; inputs resized to config.image_size",
    )
