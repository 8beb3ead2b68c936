"""Test setup: where the Triton kernels run, chosen before triton is imported anywhere.

- No CUDA device: TRITON_INTERPRET=1 (Triton's CPU interpreter) unless set otherwise; tests
  marked `gpu` skip.
- A CUDA device (and TRITON_INTERPRET not set to 1 by hand): the kernels are compiled and the
  kernel tests run on the GPU (tests/_kernel_device.py: DEVICE), the `gpu` tests included.
- `pytest --gpu` or S2I_REQUIRE_GPU=1 demands the GPU: without one (or with TRITON_INTERPRET=1
  forced) every `gpu` test fails instead of skipping, and the session says why.
"""

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--gpu", action="store_true", default=False,
                     help="demand the GPU: tests marked gpu fail (not skip) without CUDA")


def _demanded(config: pytest.Config) -> bool:
    return bool(config.getoption("--gpu")) or os.environ.get("S2I_REQUIRE_GPU", "0") not in (
        "", "0")


def pytest_configure(config: pytest.Config) -> None:
    forced = os.environ.get("TRITON_INTERPRET")
    if torch.cuda.is_available() and forced in (None, "", "0"):
        os.environ["TRITON_INTERPRET"] = "0"  # compiled kernels on the GPU
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 references are IEEE fp32
        torch.backends.cudnn.allow_tf32 = False
    elif forced is None:
        os.environ["TRITON_INTERPRET"] = "1"
    config.gpu_problem = None
    if not torch.cuda.is_available():
        config.gpu_problem = "torch sees no CUDA device"
    elif os.environ["TRITON_INTERPRET"] not in ("", "0"):
        config.gpu_problem = "TRITON_INTERPRET=1 is set, so the kernels cannot run on the GPU"
    config.gpu_demanded = _demanded(config)


def pytest_report_header(config: pytest.Config) -> str:
    mode = ("GPU: " + torch.cuda.get_device_name() if config.gpu_problem is None
            else f"CPU, Triton interpreter ({config.gpu_problem})")
    return f"s2i-fast kernels: {mode}" + ("; GPU demanded" if config.gpu_demanded else "")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is None:
        return
    problem = item.config.gpu_problem
    if problem is None:
        return
    if item.config.gpu_demanded:
        pytest.fail(f"GPU demanded (--gpu / S2I_REQUIRE_GPU=1) but {problem}", pytrace=False)
    pytest.skip(f"needs a CUDA GPU ({problem})")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if config.gpu_demanded and config.gpu_problem is not None and exitstatus == 0:
        session.exitstatus = 1  # demanded but absent: never green, even with no gpu test run


@pytest.fixture
def seed_all():
    torch.manual_seed(0)
    return 0
