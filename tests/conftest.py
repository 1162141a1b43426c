import os

import pytest

from ldlm.io import cache_dir

# Tests never touch the hub, and keep their data caches out of the user's ~/.cache/ldlm.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    user_cache = cache_dir()  # before LDLM_CACHE points at the test cache
    test_cache = tmp_path_factory.mktemp("ldlm-cache")
    # converted judge checkpoints are immutable and slow to make (~30 s): share them with the user cache
    (user_cache / "models").mkdir(parents=True, exist_ok=True)
    (test_cache / "models").symlink_to(user_cache / "models", target_is_directory=True)
    os.environ["LDLM_CACHE"] = str(test_cache)
    yield
