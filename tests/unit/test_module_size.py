"""No module of the product over 400 lines: the package, the handlers and the model server. A module that
grows past it is split by concern (as darkroom.responses was), not trimmed of its docstrings."""

from lambda_harness import ROOT

MAX_LINES = 400
PRODUCT = ("shared/darkroom", "functions", "endpoint/darkroom_endpoint")


def test_no_product_module_is_over_400_lines():
    modules = [path for folder in PRODUCT for path in (ROOT / folder).rglob("*.py")]
    assert len(modules) > 60  # the globs see the code
    too_long = {
        str(path.relative_to(ROOT)): lines
        for path in modules
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not too_long
