"""torch.export and torch.compile of a model that calls torchattn's ops (PyTorch 2.x).

    /usr/bin/python3 check_export.py path/to/libtorchattn.so

The ops trace through their Meta kernels: torch.export.export must succeed, the exported
program must run and give the eager result, and torch.compile (Inductor, its default CPU
backend) must run the same model, forward and backward, and agree. Exits 77 (skipped) where
PyTorch has no torch.export (1.x).
"""
import sys

import torch


class Model(torch.nn.Module):
    """A projection, our fused attention (causal, with a padding mask), the fused forward op's
    statistics, the fused additive scores, flex_attention (GQA, window, soft-cap, learnable
    ALiBi slopes) and graph_attention over a ring of the tokens (each attends itself and its
    two predecessors)."""

    def __init__(self, embed=32, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(embed, 3 * embed)
        self.score_weight = torch.nn.Parameter(torch.randn(embed // heads))
        self.slopes = torch.nn.Parameter(torch.rand(heads))
        self.att = torch.nn.Parameter(torch.randn(heads, embed // heads))

    @staticmethod
    def ring(n):
        """The CSR (by destination) of node i <- i, i - 1, i - 2 (mod n)."""
        col = (torch.arange(n)[:, None] - torch.arange(3)[None, :]) % n
        return torch.arange(0, 3 * n + 1, 3), col.reshape(-1)

    def forward(self, x, keep):
        b, l, e = x.shape
        q, k, v = self.qkv(x).view(b, l, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        out = torch.ops.torchattn.scaled_dot_product_attention(q, k, v, keep, 0.0, True)
        _, row_max, row_log_sum = torch.ops.torchattn._scaled_dot_product_attention_forward(
            q, k, v, None, False, 0.5)
        scores = torch.ops.torchattn.additive_attention_scores(q, k, self.score_weight)
        flex, lse = torch.ops.torchattn.flex_attention(
            q, k[:, :2], v[:, :2], causal="top_left", window_left=8, softcap=5.0,
            alibi_slopes=self.slopes, enable_gqa=True)
        nodes = lambda t: t.permute(0, 2, 1, 3).reshape(b * l, self.heads, e // self.heads)
        row_ptr, col = self.ring(b * l)
        graph, _, _ = torch.ops.torchattn.graph_attention(
            nodes(q), nodes(k), nodes(v), row_ptr, col, score="additive", score_weight=self.att)
        graph = graph.sum(-1).view(b, l, self.heads).permute(0, 2, 1)
        return (out.sum(-1) + scores.mean(-1) + (row_max + row_log_sum) + flex.sum(-1) + lse
                + graph)


def check(name, got, want, tol):
    err = (got - want).abs().max().item()
    print(f"{name}: max |diff| {err:.3g}")
    if not err <= tol:
        sys.exit(f"{name}: max |diff| {err} exceeds {tol}")


def main():
    torch.ops.load_library(sys.argv[1])
    print("torch", torch.__version__)
    if not hasattr(torch, "export"):
        print(f"skipped: torch {torch.__version__} has no torch.export")
        sys.exit(77)
    torch.manual_seed(0)
    model = Model()
    x = torch.randn(2, 40, 32)
    keep = torch.rand(2, 1, 1, 40) > 0.2
    want = model(x, keep)

    exported = torch.export.export(model, (x, keep))
    graph = str(exported.graph)
    for op in ("torchattn._scaled_dot_product_attention_forward", "torchattn.additive_attention_scores",
               "torchattn.flex_attention"):
        if op not in graph:
            sys.exit(f"torch.export: {op} is not in the exported graph:\n{graph}")
    check("torch.export: exported program against eager", exported.module()(x, keep), want, 0.0)

    compiled = torch.compile(model)
    x2 = x.clone().requires_grad_()
    got = compiled(x2, keep)
    check("torch.compile: forward against eager", got, want, 1e-5)
    got.sum().backward()
    x1 = x.clone().requires_grad_()
    model(x1, keep).sum().backward()
    check("torch.compile: grad of x against eager", x2.grad, x1.grad, 1e-5)
    # The slopes' gradient comes from the fused backward op (its Meta kernel under compile).
    model.zero_grad()
    model(x, keep).sum().backward()
    eager_slopes = model.slopes.grad.clone()
    model.zero_grad()
    compiled(x, keep).sum().backward()
    check("torch.compile: grad of the ALiBi slopes against eager", model.slopes.grad, eager_slopes, 1e-4)
    print("ok")


if __name__ == "__main__":
    main()
