#!/usr/bin/python3
"""Reference cases for torchattn's GATConv, GATv2Conv and GraphTransformerConv, in float64.

The layers are written here from the published formulas (Velickovic et al. 2018, Brody et al.
2022, Shi et al. 2021) with PyTorch Geometric's documented semantics, not from torchattn and
without PyG: GATConv's and GATv2Conv's self-loops (remove_self_loops, then one loop per node
appended), heads concatenated or averaged, the output bias, and TransformerConv's lin_skip.
The softmax over each node's incoming edges is a Python loop over nodes (no scatter), and
the parameters carry PyG's state-dict names.

Each case records the options, the parameters, x, edge_index, the output, the attention
weights with the edge_index they belong to, and the gradients of sum(output * grad_out) with
respect to x and every parameter. The file is graph.pt in this directory, a scripted container
like make_reference.py's:
    /usr/bin/python3 tests/reference/make_graph_reference.py --out tests/reference
    /usr/bin/python3 tests/reference/make_graph_reference.py --check tests/reference
"""

import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_reference import Bag, container, single_file_main  # noqa: E402

DT = torch.float64

# name: (kind, N, in_channels, out_channels, heads, options)
CASES = {
    "gat_concat": ("gat", 9, 6, 4, 3, {}),
    "gat_mean_no_bias_no_loops": ("gat", 8, 5, 3, 2,
                                  {"concat": False, "bias": False, "add_self_loops": False}),
    "gat_slope": ("gat", 7, 4, 5, 1, {"negative_slope": 0.05}),
    "gatv2_concat": ("gatv2", 9, 6, 4, 3, {}),
    "gatv2_shared_mean": ("gatv2", 8, 5, 3, 2, {"concat": False, "share_weights": True}),
    "gatv2_no_bias": ("gatv2", 7, 4, 6, 2, {"bias": False, "add_self_loops": False}),
    "transformer_concat": ("transformer", 9, 6, 4, 3, {}),
    "transformer_mean_no_root": ("transformer", 8, 5, 3, 2, {"concat": False, "root_weight": False}),
    "transformer_no_bias": ("transformer", 7, 4, 5, 2, {"bias": False}),
}

DEFAULTS = {"concat": True, "negative_slope": 0.2, "add_self_loops": True, "bias": True,
            "share_weights": False, "root_weight": True}


def graph(n, gen):
    """Random edges with a duplicate, an existing self-loop, and node n - 1 receiving nothing."""
    e = 3 * n
    src = torch.randint(0, n, (e,), generator=gen)
    dst = torch.randint(0, n - 1, (e,), generator=gen)
    edge_index = torch.stack([src, dst])
    extra = torch.tensor([[0, 2], [1, 2]])  # (0 -> 1) again, and a loop on 2
    return torch.cat([edge_index, extra, edge_index[:, :1]], 1)


def with_self_loops(edge_index, n):
    kept = edge_index[:, edge_index[0] != edge_index[1]]
    loops = torch.arange(n).repeat(2, 1)
    return torch.cat([kept, loops], 1)


def edge_softmax(scores, dst, n):
    """scores [E, H] -> softmax over each destination's edges, node by node."""
    out = torch.zeros_like(scores)
    for i in range(n):
        idx = (dst == i).nonzero().flatten()
        if idx.numel():
            out[idx] = torch.softmax(scores[idx], dim=0)
    return out


def aggregate(alpha, values_j, dst, n):
    """Σ_j alpha [E, H] * values_j [E, H, C] per destination -> [N, H, C], node by node."""
    out = torch.zeros(n, *values_j.shape[1:], dtype=DT)
    for i in range(n):
        idx = (dst == i).nonzero().flatten()
        if idx.numel():
            out[i] = (alpha[idx].unsqueeze(-1) * values_j[idx]).sum(0)
    return out


def combine(out, o):
    return out.reshape(out.shape[0], -1) if o["concat"] else out.mean(1)


def gat(x, edge_index, p, heads, c, o):
    n = x.shape[0]
    if o["add_self_loops"]:
        edge_index = with_self_loops(edge_index, n)
    src, dst = edge_index
    h = (x @ p["lin.weight"].T).view(n, heads, c)
    a_src = (h * p["att_src"]).sum(-1)
    a_dst = (h * p["att_dst"]).sum(-1)
    alpha = edge_softmax(F.leaky_relu(a_src[src] + a_dst[dst], o["negative_slope"]), dst, n)
    out = combine(aggregate(alpha, h[src], dst, n), o)
    if o["bias"]:
        out = out + p["bias"]
    return out, edge_index, alpha


def linear(x, p, name):
    y = x @ p[name + ".weight"].T
    return y + p[name + ".bias"] if name + ".bias" in p else y


def gatv2(x, edge_index, p, heads, c, o):
    n = x.shape[0]
    if o["add_self_loops"]:
        edge_index = with_self_loops(edge_index, n)
    src, dst = edge_index
    x_l = linear(x, p, "lin_l").view(n, heads, c)
    x_r = x_l if o["share_weights"] else linear(x, p, "lin_r").view(n, heads, c)
    e = F.leaky_relu(x_l[src] + x_r[dst], o["negative_slope"])
    alpha = edge_softmax((e * p["att"]).sum(-1), dst, n)
    out = combine(aggregate(alpha, x_l[src], dst, n), o)
    if o["bias"]:
        out = out + p["bias"]
    return out, edge_index, alpha


def transformer(x, edge_index, p, heads, c, o):
    n = x.shape[0]
    src, dst = edge_index
    q = linear(x, p, "lin_query").view(n, heads, c)
    k = linear(x, p, "lin_key").view(n, heads, c)
    v = linear(x, p, "lin_value").view(n, heads, c)
    alpha = edge_softmax((q[dst] * k[src]).sum(-1) / math.sqrt(c), dst, n)
    out = combine(aggregate(alpha, v[src], dst, n), o)
    if o["root_weight"]:
        out = out + linear(x, p, "lin_skip")
    return out, edge_index, alpha


def param_shapes(kind, fin, c, heads, o):
    hc = heads * c
    out_bias = hc if o["concat"] else c
    if kind == "gat":
        shapes = {"lin.weight": (hc, fin), "att_src": (1, heads, c), "att_dst": (1, heads, c)}
        if o["bias"]:
            shapes["bias"] = (out_bias,)
    elif kind == "gatv2":
        shapes = {"lin_l.weight": (hc, fin), "att": (1, heads, c)}
        if not o["share_weights"]:
            shapes["lin_r.weight"] = (hc, fin)
        if o["bias"]:
            shapes["lin_l.bias"] = (hc,)
            if not o["share_weights"]:
                shapes["lin_r.bias"] = (hc,)
            shapes["bias"] = (out_bias,)
    else:
        shapes = {}
        for name in ("lin_key", "lin_query", "lin_value"):
            shapes[name + ".weight"] = (hc, fin)
            shapes[name + ".bias"] = (hc,)
        if o["root_weight"]:
            shapes["lin_skip.weight"] = (out_bias, fin)
            if o["bias"]:
                shapes["lin_skip.bias"] = (out_bias,)
    return shapes


def run_case(name, spec, seed):
    kind, n, fin, c, heads, opts = spec
    o = dict(DEFAULTS, **opts)
    gen = torch.Generator().manual_seed(seed)
    params = {k: (torch.randn(s, generator=gen, dtype=DT) * 0.5).requires_grad_()
              for k, s in param_shapes(kind, fin, c, heads, o).items()}
    x = torch.randn(n, fin, generator=gen, dtype=DT).requires_grad_()
    edge_index = graph(n, gen)
    layer = {"gat": gat, "gatv2": gatv2, "transformer": transformer}[kind]
    out, edges, alpha = layer(x, edge_index, params, heads, c, o)
    grad_out = torch.randn(out.shape, generator=gen, dtype=DT)
    grads = torch.autograd.grad(out, [x] + list(params.values()), grad_out)
    tensors = {"x": x, "edge_index": edge_index, "output": out, "edges": edges, "weights": alpha,
               "grad_out": grad_out, "grads.x": grads[0]}
    tensors.update({"params." + k: t for k, t in params.items()})
    if kind == "gatv2" and o["share_weights"]:
        # PyG registers the shared Linear under both names: its state dict lists lin_r too.
        tensors.update({"params." + k.replace("lin_l", "lin_r"): t
                        for k, t in params.items() if k.startswith("lin_l.")})
    tensors.update({"grads." + k: g for k, g in zip(params, grads[1:])})
    attrs = {"kind": kind, "in_channels": fin, "out_channels": c, "heads": heads}
    attrs.update(o)
    return Bag(tensors, attrs)


def build():
    return container({n: run_case(n, s, 9000 + i) for i, (n, s) in enumerate(CASES.items())})


if __name__ == "__main__":
    sys.exit(single_file_main(__doc__, "graph.pt", build, len(CASES)))
