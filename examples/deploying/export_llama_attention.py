#!/usr/bin/python3
"""Writes the attention weights of a Llama/Mistral layer as a TorchScript file that C++ loads
by name with torchattn::jit::load_state_dict (state-dict names self_attn.q_proj.weight, ...).

    python3 export_llama_attention.py OUT.pt               # random weights (the example's test)

With Hugging Face transformers, take a real layer instead of the stand-in below:
    layer = AutoModelForCausalLM.from_pretrained(...).model.layers[0]
"""
import sys

import torch


def holder_of(self_attn):
    """A scriptable module holding the four projections under Hugging Face's names."""
    holder = torch.nn.Module()
    holder.self_attn = torch.nn.Module()
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        setattr(holder.self_attn, name, getattr(self_attn, name))
    return holder


def main():
    torch.manual_seed(0)
    # A stand-in for a layer's self_attn: hidden 256, 8 heads of 32, 2 kv heads, no biases.
    stand_in = torch.nn.Module()
    for name, (out_f, in_f) in {"q_proj": (256, 256), "k_proj": (64, 256), "v_proj": (64, 256),
                                "o_proj": (256, 256)}.items():
        setattr(stand_in, name, torch.nn.Linear(in_f, out_f, bias=False))
    torch.jit.save(torch.jit.script(holder_of(stand_in)), sys.argv[1])
    print(f"wrote {sys.argv[1]}")


if __name__ == "__main__":
    main()
