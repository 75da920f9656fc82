"""Configuration: defaults, YAML overrides, and settings of the wrong type named before any gate runs."""

import pytest

from segcheck import SegcheckError
from segcheck import config as segconfig


def test_values_take_the_type_of_their_default():
    config = segconfig.load(overrides={"eval": {"size": 8.0, "split": "test"}, "noise_input": {"max_miou": 1}})
    assert config["eval"]["size"] == 8 and isinstance(config["eval"]["size"], int)
    assert config["noise_input"]["max_miou"] == 1.0 and isinstance(config["noise_input"]["max_miou"], float)
    assert config["eval"]["split"] == "test"


@pytest.mark.parametrize(
    "section, key, value, wanted",
    [
        ("eval", "split", 5, "a string"),
        ("generalization", "split", ["val"], "a string"),
        ("eval", "size", 2.5, "a whole number"),
        ("eval", "seed", float("inf"), "a whole number"),
        ("eval", "size", True, "a whole number"),
        ("noise_input", "max_miou", "0.1", "a number"),
    ],
)
def test_wrong_types_are_named(tmp_path, section, key, value, wanted):
    path = tmp_path / "segcheck.yaml"
    path.write_text(f"{section}:\n  {key}: {value!r}\n".replace("inf", ".inf").replace("True", "true"))
    with pytest.raises(SegcheckError, match=rf"segcheck.yaml: {section}.{key} must be {wanted}, got"):
        segconfig.load(path)
