import os

import pytest

# Tests never touch the hub, and keep their caches out of the user's ~/.cache/ldlm.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    if "LDLM_TEST_CACHE" in os.environ:  # CI may keep one cache across test files
        os.environ["LDLM_CACHE"] = os.environ["LDLM_TEST_CACHE"]
    else:
        os.environ["LDLM_CACHE"] = str(tmp_path_factory.mktemp("ldlm-cache"))
    yield
