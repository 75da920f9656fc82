"""Registries: duplicates raise, unknown names list the known ones, entries know their plugin."""

import pytest

from segcheck import SegcheckError
from segcheck.plugins import MODEL_META
from segcheck.registry import Registry


def build(num_classes):
    return None


def test_duplicate_name_names_both_plugins():
    reg = Registry("model")
    with reg.provided_by("first"):
        reg.add("net", build)
    with reg.provided_by("second"), pytest.raises(SegcheckError, match="registered twice.*first.*second"):
        reg.add("net", build)


def test_unknown_name_lists_known_ones():
    reg = Registry("dataset")
    reg.add("b", build)
    reg.add("a", build)
    with pytest.raises(SegcheckError, match=r"unknown dataset 'c'; known datasets: a, b"):
        reg.get("c")


def test_entry_records_plugin_and_meta():
    reg = Registry("model", MODEL_META)
    with reg.provided_by("my_plugin"):
        reg.add("net", build, divisible_by=8)
    entry = reg.get("net")
    assert (entry.plugin, entry.meta, entry.obj) == ("my_plugin", {"divisible_by": 8}, build)
    assert reg.names() == ["net"] and "net" in reg and len(reg) == 1


@pytest.mark.parametrize("name, obj", [("", build), (3, build), ("x", 42)])
def test_bad_registrations_are_errors(name, obj):
    with pytest.raises(SegcheckError):
        Registry("model").add(name, obj)


def test_misspelled_metadata_is_an_error_naming_the_known_keys():
    reg = Registry("model", MODEL_META)
    with (
        reg.provided_by("my_arch.py"),
        pytest.raises(
            SegcheckError,
            match=r"model 'net' from plugin my_arch.py has unknown metadata divisble_by, "
            r"num_class; known: num_classes, mean, std, binary, prompted, divisible_by",
        ),
    ):
        reg.add("net", build, divisble_by=8, num_class=13)
