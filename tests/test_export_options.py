"""simclrv2.export.options: what ExportOptions refuses, in one line naming the fix, before any
model is read."""

import pytest

from simclrv2.export.errors import ExportError
from simclrv2.export.options import FORMATS, ExportOptions


def test_formats_from_a_string_or_a_list_in_the_order_given():
    assert ExportOptions().formats == FORMATS
    assert ExportOptions(formats=" ONNX,keras,onnx,").formats == ("onnx", "keras")
    assert ExportOptions(formats=["keras"]).formats == ("keras",)


@pytest.mark.parametrize("arguments, words", [
    ({"formats": "onnx,coreml"}, "unknown export format(s) ['coreml']"),
    ({"formats": ""}, "unknown export format(s)"),
    ({"temperature": 0}, "temperature must be > 0"),
    ({"image_size": 4}, "image_size must be an integer >= 8"),
    ({"image_size": 32.5}, "image_size must be an integer >= 8"),
    ({"provenance": ["a"]}, "provenance must be a dict"),
    ({"quantize": "int4", "calibration": "x"}, "unknown quantization 'int4'"),
    ({"quantize": "int8", "formats": "savedmodel", "calibration": "x"}, "add onnx"),
    ({"quantize": "int8"}, "needs calibration images"),
    ({"quantize": "int8", "calibration": "x", "max_int8_drop": -1}, "max_int8_drop must be >= 0"),
])
def test_bad_options_are_refused(arguments, words):
    with pytest.raises(ExportError) as error:
        ExportOptions(**arguments)
    assert words in str(error.value) and "\n" not in str(error.value)
