"""Cross-check against torch-fidelity 0.4.0 (installed with --no-deps, as the README's test command does): its
FeatureExtractorInceptionV3 with the same random weights gives the same pool features and logits, and its FID, KID
and IS give the same values on the same features. The comparison is benchmarks/fidelity_check.py's, which prints it
for the real weight file."""

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).parent.parent / "benchmarks" / "fidelity_check.py"


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    """Modules named like torchvision's, for torch-fidelity's imports only: its Inception extractor and its FID,
    KID and IS functions never call torchvision, but its package imports it (CLIP, VGG, datasets), and torchvision
    does not work beside the CPU torch wheel these tests run on."""
    modules = {}
    for name in ("torchvision", "torchvision.datasets", "torchvision.models", "torchvision.transforms",
                 "torchvision.transforms.functional"):
        module = types.ModuleType(name)
        module.__getattr__ = lambda attr, name=name: type(attr, (), {"__module__": name})  # any name imports
        modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, module)  # `import torchvision.transforms.functional as F` needs these
    return modules


@pytest.fixture(scope="module")
def fidelity_check():
    if importlib.util.find_spec("torch_fidelity") is None:
        pytest.skip("torch-fidelity is not installed: pip install --no-deps torch-fidelity==0.4.0")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:  # no torchvision: import torch-fidelity with the stand-in, then remove the stand-in
        stand_in = _torchvision_stand_in()
        saved = {name: sys.modules.get(name) for name in stand_in}
        sys.modules.update(stand_in)
        try:
            import torch_fidelity  # noqa: F401
        finally:
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module
    spec = importlib.util.spec_from_file_location("fidelity_check", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_same_features_and_metrics_as_torch_fidelity(fidelity_check, inception_weights, tmp_path, capsys):
    import torch_fidelity

    assert torch_fidelity.__version__ == "0.4.0"
    out = tmp_path / "fidelity.json"
    assert fidelity_check.main(["--inception", str(inception_weights), "--images", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == result  # printed and recorded
    assert set(result["features"]) == {f"{size}-{mode}" for size in (32, 64, 299) for mode in ("rgb", "gray")}
    for where, diff in result["features"].items():
        assert diff["pool"] < 1e-5 and diff["logits"] < 1e-5, (where, diff)
    assert result["fid"]["vitgan"] == pytest.approx(result["fid"]["torch_fidelity"], rel=1e-9)
    assert result["kid"]["vitgan"] == pytest.approx(result["kid"]["torch_fidelity"], rel=1e-9)
    assert result["is"]["vitgan"] == pytest.approx(result["is"]["torch_fidelity"], rel=1e-9)
