import importlib.util
import os
import sys
from pathlib import Path

# Tests never reach the network: the Hub is unreachable here and weights must come from local folders.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_model():
    from med_hf import MEDConfig, MEDModel

    torch.manual_seed(0)
    return MEDModel(MEDConfig.from_preset("tiny")).eval()


@pytest.fixture(scope="session")
def space_app():
    """space/app.py imported as a module (the Space's folder is not a package)."""
    pytest.importorskip("gradio")
    if "space_app" not in sys.modules:
        spec = importlib.util.spec_from_file_location("space_app", Path(__file__).parents[1] / "space" / "app.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["space_app"] = module
        spec.loader.exec_module(module)
    return sys.modules["space_app"]
