"""What a person reads stays short and whole: lists cut with a count, descriptions wrapped (not
cut), numbers shown to the digits that matter, no library warning leaking into a command."""

import warnings

import numpy as np
import pytest

from segcheck import cli
from segcheck.gates.registered import summary
from segcheck.pytest_plugin import _rounded
from segcheck.report import _fmt
from segcheck.train.trainer import _Pairs
from segcheck.wording import listed


def test_a_long_list_is_cut_with_the_count_of_the_rest():
    assert listed(["a", "b", "c"]) == "a, b, c"
    assert listed([f"c{i}" for i in range(15)]) == "c0, c1, c2, c3, c4, c5, c6, c7 and 7 more"


def test_a_description_is_the_docstrings_whole_first_paragraph():
    def gate():
        """First line that ends, see :func:`iou` and ``x``,
        mid-sentence here.

        Details."""

    assert summary(gate) == "First line that ends, see iou and x, mid-sentence here."


def test_segcheck_list_wraps_descriptions_without_cutting_them(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 80
    words = " ".join(out.split())
    assert "(AUPR, per image, components)" in words  # the anomaly gates' descriptions, whole


@pytest.mark.parametrize(
    "value, shown", [(0.0, "0"), (1e-5, "1e-05"), (0.00012345, "0.000123"), (0.5, "0.5000"), (3, "3")]
)
def test_thresholds_never_read_as_zeros(value, shown):
    assert _fmt(value) == shown


def test_normalization_is_shown_to_four_significant_digits():
    as_float64 = np.float32([0.4, 0.456]).astype(np.float64).tolist()  # 0.4000000059604645, ...
    assert _rounded(as_float64) == "(0.4, 0.456)"


def test_the_trainer_reads_read_only_samples_without_a_warning():
    class ReadOnly:
        spec = type("Spec", (), {"prompted": False})()

        def __len__(self):
            return 1

        def __getitem__(self, i):
            image, mask = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.int64)
            image.flags.writeable = mask.flags.writeable = False
            return image, mask

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image, mask = _Pairs(ReadOnly())[0]
    image[0, 0, 0] = 1  # a copy: the dataset's arrays are untouched
    assert mask.dtype.is_floating_point is False and image.shape == (4, 4, 3)


def test_the_header_on_the_embedded_default_is_two_short_lines(pytester):
    from tests.conftest import REPO

    result = pytester.runpytest_subprocess(str(REPO / "suites" / "gates"), "--collect-only", "-p", "no:cacheprovider")
    header = [line for line in result.stdout.lines if line.startswith("segcheck")]
    header = [line for line in header if not line.startswith("segcheck: gates of")]  # an absent extra's note
    assert len(header) == 2, header  # what is tested, and its normalization; the settings are the defaults
    assert header[1].startswith("segcheck normalization: mean (0.4, 0.456, 0.398), std (0.202, 0.182, 0.27)")
