"""kernels/precompile.py without a GPU: the cache hook records what Triton hands it (the
call Triton's JIT makes before compiling) and tells it to skip, restores the previous hook,
and lets an unknown hook protocol compile as usual. The GPU round trip (record, compile in
worker processes, launch from the cache) is tested in test_kernels_infer_conv.py."""

from __future__ import annotations

import pytest

pytest.importorskip("triton")
from triton import knobs  # noqa: E402
from triton.runtime.jit import JitFunctionInfo  # noqa: E402

from s2i_fast.kernels import conv_igemm  # noqa: E402
from s2i_fast.kernels import precompile as P  # noqa: E402


def _call(hook, data: str):  # noqa: ANN001, ANN202  (as JITFunction._call_hook calls it)
    fn = JitFunctionInfo("s2i_fast.kernels.conv_igemm", "_conv_kernel", conv_igemm._conv_kernel)
    return hook(key="k", repr="r", fn=fn, compile={"key": "k", "specialization_data": data},
                is_manual_warmup=False, already_compiled=False)


def test_hook_records_each_specialisation_once_and_skips_the_launch() -> None:
    assert P.hook_available()
    before = knobs.runtime.jit_cache_hook
    with P.collect_specializations() as specs:
        hook = knobs.runtime.jit_cache_hook
        assert _call(hook, '{"a": 1}') is True and _call(hook, '{"a": 1}') is True
        assert _call(hook, '{"a": 2}') is True
        assert hook(key="k", compile=None) is False  # another protocol: compile as usual
    assert knobs.runtime.jit_cache_hook is before
    assert [(s.module, s.name, s.data) for s in specs] == [
        ("s2i_fast.kernels.conv_igemm", "_conv_kernel", '{"a": 1}'),
        ("s2i_fast.kernels.conv_igemm", "_conv_kernel", '{"a": 2}')]


def test_nothing_recorded_compiles_nothing_and_a_failing_workload_is_reported() -> None:
    assert P.compile_parallel([]).kernels == 0

    def broken() -> None:
        raise RuntimeError("boom")

    report = P.precompile(broken)
    assert report.kernels == 0 and report.failed and "boom" in report.failed[0]
    assert "0 kernel specialisations" in report.line()
