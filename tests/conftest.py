import os

import pytest

# Tests run on a 2-core CPU beside other work: one thread keeps them predictable.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    import torch  # deferred: OMP_NUM_THREADS (above) must be set before torch loads
    torch.set_num_threads(1)
