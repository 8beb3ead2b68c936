"""TritonGenerator: the whole eval-mode generator on the implicit-GEMM Triton kernels.

Built once from an eval-mode ``Generator`` (docs/kernels.md, "Inference path"):

    tg = TritonGenerator.from_generator(gen.eval(), dtype=torch.float16, device="cuda")
    images = tg(sketch [B, 1, R, R], label [B] int64, noise [B, noise_dim])  # [B, 3, R, R] fp32

What ``from_generator`` does once: conditional batch norms become per-class (scale, shift)
tables from their running statistics (so the engine always computes eval mode), conv weights
become [k*k*Cin, Cout] GEMM operands in the compute dtype, the noise linear's columns are
reordered to NHWC. Per batch size a plan is built: static NHWC buffers and the list of kernel
launches (no torch ops in between), in this order (resolution 64, stem "label": 29 launches):

    1  sketch pyramid (all levels, one launch)
    per encoder level r:  gate conv (m*x, n) | z conv + norm + act + gated combine -> skip slice
                          | stride-2 conv + norm + act
    1  noise linear -> channel slice of the bottleneck buffer (the concat is free)
    per decoder level:    gate conv | z conv ... | upsample-conv + norm + act -> concat slice
    out MRU (2) and the final conv + tanh, written as NCHW fp32

Decoder skips need no copy: the encoder MRU writes its output straight into the channel slice
of the buffer that the decoder's upsample conv later fills in front of it. The label stem is a
gather inside the first MRU's kernels (the embedding row is read through the label), so it
costs no launch either. Each conv runs the config of the sm_90 tuning table (or its heuristic,
kernels/conv_tuning.py); nothing is autotuned at run time. A plan owns its split-K workspace,
sized once from its launches before warm-up (split-K is deterministic: every replay gives the
same bits). On CUDA the kernels of every plan being prepared are first compiled in parallel
over the CPU cores (kernels/precompile.py), then each plan is warmed up once and captured in
one CUDA graph; ``prepare(batches)`` does that for several batch sizes at once.
``launches_per_forward`` is the number of launches in a plan (stem "sketch": 30, one per
resolution doubling: 3 per level + 5). ``tg(...)`` copies the
inputs into the static buffers, replays and returns a clone of the output (3 copies + 1 clone
outside the graph); ``static_io(B)`` / ``replay(B)`` skip those for servers and benchmarks.
On the CPU the kernels run under Triton's interpreter (TRITON_INTERPRET=1), for tests.

Accuracy (tests/test_kernels_infer_generator.py): fp32 within 1e-4 of the reference Generator;
fp16/bf16 against the fp32 reference within 2x the error of the torch Generator run in that
dtype plus 2e-3 / 1.6e-2 (accumulation is fp32 everywhere; activations are stored in the
compute dtype between launches, as eager half precision does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from s2i_fast.errors import BackendUnavailable, EngineError

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _import_kernels() -> tuple[Any, Any]:
    try:
        from s2i_fast.kernels import conv_igemm, infer_aux
    except ImportError as e:  # triton missing or broken
        raise BackendUnavailable(
            f"the triton backend needs triton ({e}); install it: pip install 's2i-fast[triton]'"
        ) from e
    return conv_igemm, infer_aux


def _check_device(device: torch.device, conv_igemm: Any) -> None:
    interpreted = type(conv_igemm._conv_kernel).__name__ == "InterpretedFunction"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailable(f"the triton backend was asked for {device} but torch sees "
                                     "no CUDA device (install a CUDA build of torch)")
        if interpreted:
            raise BackendUnavailable("TRITON_INTERPRET=1 is set: the triton backend cannot run "
                                     "on CUDA under the interpreter; unset it")
    elif device.type == "cpu":
        if not interpreted:
            raise BackendUnavailable("the triton backend needs a CUDA GPU; on the CPU it runs "
                                     "only under Triton's interpreter (TRITON_INTERPRET=1, "
                                     "set before triton is imported; slow, for tests)")
    else:
        raise BackendUnavailable(f"the triton backend runs on CUDA (or the CPU interpreter), "
                                 f"not on {device}")


@dataclass
class _MRU:
    cx: int
    co: int
    w_gate: torch.Tensor  # [9*(cx+1), cx+co]
    b_gate: torch.Tensor  # [cx+co] fp32
    w_z: torch.Tensor  # [9*(cx+1), co]
    z_scale: torch.Tensor  # [classes, co] fp32
    z_shift: torch.Tensor
    w_short: torch.Tensor | None  # [cx, co] or None (identity)
    s_scale: torch.Tensor | None
    s_shift: torch.Tensor | None


@dataclass
class _Conv:
    w: torch.Tensor  # [k*k*cin, cout]
    cout: int
    bias: torch.Tensor | None = None  # [cout] fp32
    scale: torch.Tensor | None = None  # [classes, cout] fp32
    shift: torch.Tensor | None = None


@dataclass
class _Plan:
    sketch: torch.Tensor  # [B, 1, R, R] fp32 static input
    label: torch.Tensor  # [B] int64
    noise: torch.Tensor  # [B, noise_dim] fp32
    out: torch.Tensor  # [B, 3, R, R] fp32
    ops: list
    workspace: Any = None  # conv_tuning.SplitWorkspace: this plan's split-K partials
    graph: Any = None


class TritonGenerator:
    """The generator of an eval-mode ``Generator`` on Triton kernels (see the module doc)."""

    def __init__(self) -> None:  # use from_generator
        self.plans: dict[int, _Plan] = {}

    @classmethod
    def from_generator(cls, gen: torch.nn.Module, dtype: torch.dtype = torch.float16,
                       device: str | torch.device = "cuda",
                       cuda_graph: bool = True) -> TritonGenerator:
        conv_igemm, infer_aux = _import_kernels()
        device = torch.device(device)
        _check_device(device, conv_igemm)
        return cls._fold_generator(gen, dtype, device, cuda_graph)

    @classmethod
    def _fold_generator(cls, gen: torch.nn.Module, dtype: torch.dtype, device: torch.device,
                        cuda_graph: bool = True) -> TritonGenerator:
        """from_generator without the device check (compile_check traces launches with it)."""
        conv_igemm, infer_aux = _import_kernels()
        if dtype not in _DTYPES:
            raise EngineError(f"triton backend dtype must be one of {_DTYPES}, got {dtype}")
        self = cls()
        self.k, self.aux = conv_igemm, infer_aux
        self.cfg, self.dtype, self.device = gen.cfg, dtype, device
        self.use_graph = cuda_graph and device.type == "cuda"
        self.slope = float(gen.cfg.act_slope)
        self.resolutions = list(gen.resolutions)
        with torch.no_grad():
            self._fold(gen)
        n_levels = len(self.resolutions)
        self.launches_per_forward = (1 + (gen.cfg.stem == "sketch") + 3 * n_levels + 1
                                     + 3 * n_levels + 2 + 1)
        return self

    # -- folding -------------------------------------------------------------------------
    def _dev(self, t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        return t.detach().to(device=self.device, dtype=dtype or self.dtype).contiguous()

    def _norm(self, norm: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = self.k.fold_norm_ref(norm.gamma.weight, norm.beta.weight,
                                            norm.running_mean, norm.running_var, norm.eps)
        return self._dev(scale, torch.float32), self._dev(shift, torch.float32)

    def _conv(self, conv: torch.nn.Conv2d, norm: torch.nn.Module | None = None) -> _Conv:
        c = _Conv(self._dev(self.k.weight_to_gemm(conv.weight)), conv.out_channels)
        if conv.bias is not None:
            c.bias = self._dev(conv.bias, torch.float32)
        if norm is not None:
            c.scale, c.shift = self._norm(norm)
        return c

    def _mru(self, m: torch.nn.Module) -> _MRU:
        zs, zh = self._norm(m.norm_z)
        p = _MRU(m.in_channels, m.out_channels,
                 self._dev(self.k.weight_to_gemm(m.conv_gate.weight)),
                 self._dev(m.conv_gate.bias, torch.float32),
                 self._dev(self.k.weight_to_gemm(m.conv_z.weight)), zs, zh, None, None, None)
        if m.conv_short is not None:
            p.w_short = self._dev(self.k.weight_to_gemm(m.conv_short.weight))
            p.s_scale, p.s_shift = self._norm(m.norm_short)
        return p

    def _fold(self, gen: torch.nn.Module) -> None:
        cfg = gen.cfg
        if cfg.stem == "label":  # [classes, R*R] -> NHWC [classes, R, R, 1], read by label
            r = cfg.resolution
            self.stem_table = self._dev(gen.stem_embed.weight).view(-1, r, r, 1)
        else:
            self.stem = self._conv(gen.stem_conv)
        self.enc = [(self._mru(m), self._conv(d.conv, d.norm))
                    for m, d in zip(gen.enc_mru, gen.enc_down, strict=True)]
        self.dec = [(self._mru(m), self._conv(u["block"].conv, u["block"].norm))
                    for m, u in zip(gen.dec_mru, gen.dec_up, strict=True)]
        self.out_mru = self._mru(gen.out_mru)
        self.out_conv = self._conv(gen.out_conv)
        self.noise_w, self.noise_b = self.aux.noise_fc_weight(
            gen.noise_fc.weight, gen.noise_fc.bias, cfg.noise_channels, self.dtype)
        self.noise_w = self.noise_w.to(self.device)
        self.noise_b = self.noise_b.to(self.device)

    # -- plan ----------------------------------------------------------------------------
    def _mru_ops(self, ops: list, p: _MRU, x: torch.Tensor, img: torch.Tensor,
                 out: torch.Tensor, label: torch.Tensor, gather: bool = False) -> None:
        b, h, w, _ = out.shape
        mx = torch.empty(b, h, w, p.cx, device=self.device, dtype=self.dtype)  # m * x
        n = torch.empty(b, h, w, p.co, device=self.device, dtype=self.dtype)  # sigmoid(n_logits)
        ops.append(partial(self.k.conv_gate_nhwc, x, img, p.w_gate, p.b_gate, mx, n,
                           label=label, gather_x=gather, workspace=self._ws))
        ops.append(partial(self.k.conv_z_nhwc, mx, img, p.w_z, p.z_scale, p.z_shift, label, n, x,
                           out, w_short=p.w_short, sscale=p.s_scale, sshift=p.s_shift,
                           slope=self.slope, gather_sc=gather, workspace=self._ws))

    def _conv_op(self, ops: list, c: _Conv, x: torch.Tensor, out: torch.Tensor,
                 label: torch.Tensor, **kw: Any) -> None:
        ops.append(partial(self.k.conv_nhwc, x, c.w, out, bias=c.bias, scale=c.scale,
                           shift=c.shift, label=label, slope=self.slope, workspace=self._ws,
                           **kw))

    def _build(self, batch: int) -> _Plan:
        """The plan of one batch size: buffers, launches and its sized split-K workspace (not
        yet compiled, warmed up or captured: see ``prepare``)."""
        cfg, dev, dt, res = self.cfg, self.device, self.dtype, self.cfg.resolution
        self._ws = self.k.SplitWorkspace(dev)

        def buf(*shape: int) -> torch.Tensor:
            return torch.empty(*shape, device=dev, dtype=dt)

        plan = _Plan(torch.zeros(batch, 1, res, res, device=dev),
                     torch.zeros(batch, dtype=torch.int64, device=dev),
                     torch.zeros(batch, cfg.noise_dim, device=dev),
                     torch.empty(batch, 3, res, res, device=dev), [], self._ws)
        ops, lab = plan.ops, plan.label
        flat = buf(self.aux.pyramid_size(batch, res))
        ops.append(partial(self.aux.sketch_pyramid, plan.sketch, flat))
        pyr = self.aux.pyramid_views(flat, batch, res)  # {r: [B, r, r, 1]}
        if cfg.stem == "label":
            x, gather = self.stem_table, True
        else:
            x, gather = buf(batch, res, res, self.stem.cout), False
            self._conv_op(ops, self.stem, pyr[res], x, lab)
        # concat buffers [B, r, r, up + skip]: decoder up conv output first, then the skip
        cup = {r: up.cout for r, (_, up) in zip(reversed(self.resolutions), self.dec, strict=True)}
        cat = {r: buf(batch, r, r, cup[r] + mru.co) for r, (mru, _) in
               zip(self.resolutions, self.enc, strict=True)}
        w8 = self.enc[-1][0].co
        bott = buf(batch, 4, 4, w8 + cfg.noise_channels)  # [B, 4, 4, w(8) + noise channels]
        for i, (r, (mru, down)) in enumerate(zip(self.resolutions, self.enc, strict=True)):
            skip = cat[r][..., cup[r]:]  # [B, r, r, w(r)]
            self._mru_ops(ops, mru, x, pyr[r], skip, lab, gather)
            nxt = bott[..., :w8] if i == len(self.enc) - 1 else buf(batch, r // 2, r // 2,
                                                                    down.cout)
            self._conv_op(ops, down, skip, nxt, lab, stride=2, act="leaky")
            x, gather = nxt, False
        ops.append(partial(self.aux.noise_fc, plan.noise, self.noise_w, self.noise_b,
                           bott[..., w8:]))
        x, s = bott, 4
        for mru, up in self.dec:
            h = buf(batch, s, s, mru.co)
            self._mru_ops(ops, mru, x, pyr[s], h, lab)
            s *= 2
            self._conv_op(ops, up, h, cat[s][..., :cup[s]], lab, upsample=cfg.upsample,
                          act="leaky")
            x = cat[s]
        h = buf(batch, res, res, self.out_mru.co)
        self._mru_ops(ops, self.out_mru, x, pyr[res], h, lab)
        self._conv_op(ops, self.out_conv, h, plan.out, lab, act="tanh", out_nchw=True)
        assert len(ops) == self.launches_per_forward, (len(ops), self.launches_per_forward)
        plan.workspace.reserve(*self.workspace_need(plan))
        return plan

    def workspace_need(self, plan: _Plan) -> tuple[int, int]:
        """(fp32 partials, int32 counters) the largest split-K launch of the plan needs (its
        launches run one after another, so one workspace serves them all)."""
        self.k.RECORDER = []
        try:
            for op in plan.ops:
                op()
            recs = list(self.k.RECORDER)
        finally:
            self.k.RECORDER = None
        needs = [r[7] for r in recs if r[0] == "conv"]
        return max((n[0] for n in needs), default=0), max((n[1] for n in needs), default=0)

    def prepare(self, batches: list[int], parallel_compile: bool = True,
                progress: bool = False) -> Any:
        """Build the plans of ``batches`` (those not built yet); on CUDA compile all their
        kernels at once over the CPU cores (``parallel_compile``; S2I_PARALLEL_COMPILE=0 turns
        it off), then warm up and capture each plan. Returns the precompile.CompileReport
        (None when nothing was compiled in parallel)."""
        new = [b for b in dict.fromkeys(batches) if b not in self.plans]
        plans = {b: self._build(b) for b in new}
        report = None
        parallel = parallel_compile and os.environ.get("S2I_PARALLEL_COMPILE", "1") != "0"
        if plans and self.device.type == "cuda" and parallel:
            from s2i_fast.kernels.precompile import precompile

            def every_launch() -> None:
                for plan in plans.values():
                    for op in plan.ops:
                        op()

            report = precompile(every_launch, progress=progress)
        for b, plan in plans.items():
            if self.use_graph:
                self._capture(plan)
            self.plans[b] = plan
        return report

    def _capture(self, plan: _Plan) -> None:
        """Warm up (first launches load the compiled kernels) on a side stream, then capture
        every launch in one graph. Nothing allocates during capture: the workspace is sized."""
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                for op in plan.ops:
                    op()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for op in plan.ops:
                op()
        plan.graph = graph

    # -- run -----------------------------------------------------------------------------
    def static_io(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                             torch.Tensor]:
        """(sketch, label, noise, out): the static buffers of the batch's plan (built on first
        use). Write inputs into the first three in place, call ``replay(batch)``, read ``out``
        (overwritten by the next replay): the zero-copy path for servers and benchmarks."""
        if batch not in self.plans:
            self.prepare([batch])
        plan = self.plans[batch]
        return plan.sketch, plan.label, plan.noise, plan.out

    def replay(self, batch: int) -> torch.Tensor:
        """Run the plan of ``batch`` on its static inputs (CUDA graph where captured); returns
        the static output buffer. Labels are not range-checked here."""
        plan = self.plans[batch]
        if plan.graph is not None:
            plan.graph.replay()
        else:
            for op in plan.ops:
                op()
        return plan.out

    def __call__(self, sketch: torch.Tensor, label: torch.Tensor,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
        """sketch [B, 1, R, R] model space, label [B] int64, noise [B, noise_dim] (None: normal
        noise) -> [B, 3, R, R] float32 in [-1, 1]. Labels on the CPU are range-checked; labels
        already on the GPU are not (checking would cost a device sync)."""
        cfg, res = self.cfg, self.cfg.resolution
        if sketch.dim() != 4 or tuple(sketch.shape[1:]) != (1, res, res):
            raise EngineError(f"sketch must be [B, 1, {res}, {res}], got {tuple(sketch.shape)}")
        batch = sketch.shape[0]
        if label.shape != (batch,):
            raise EngineError(f"label must be [{batch}], got {tuple(label.shape)}")
        if label.device.type == "cpu" and batch and (
                int(label.min()) < 0 or int(label.max()) >= cfg.num_classes):
            raise EngineError(f"labels must be in [0, {cfg.num_classes}), got "
                              f"{label.tolist()}")
        if noise is None:
            noise = torch.randn(batch, cfg.noise_dim, device=self.device)
        if tuple(noise.shape) != (batch, cfg.noise_dim):
            raise EngineError(f"noise must be [{batch}, {cfg.noise_dim}], got "
                              f"{tuple(noise.shape)}")
        sk, lab, nz, _ = self.static_io(batch)
        sk.copy_(sketch)
        lab.copy_(label)
        nz.copy_(noise)
        return self.replay(batch).clone()
