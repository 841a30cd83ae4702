import os

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
