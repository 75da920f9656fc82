"""mypkg's segcheck plugin, registered by the entry point in pyproject.toml: the model and the
dataset by name, with the checkpoint the package ships (``segcheck check gates --model mypkg-net
--dataset mypkg-terrain`` then needs no --checkpoint)."""

from segcheck.hookspecs import hookimpl

from mypkg import data, models


@hookimpl
def segcheck_register_models(registry):
    registry.add(
        "mypkg-net",
        models.build,
        checkpoints={"mypkg-terrain": models.WEIGHTS},
        args={"width": "channels of the hidden layers (default 16)"},
        description="mypkg's TerrainNet: three convolutions, any input size",
    )


@hookimpl
def segcheck_register_datasets(registry):
    registry.add("mypkg-terrain", data.load, needs_root=False, description="procedural 64x64 terrain maps, 8 classes")
