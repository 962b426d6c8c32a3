#!/usr/bin/env python3
"""Writes the PyTorch fixtures of tests/safetensors.rs (run with the peers' venv, which has torch).

    ~/.cache/tapegrad-peers-venv/bin/pip install safetensors      # once
    ~/.cache/tapegrad-peers-venv/bin/python scripts/make_safetensors_fixture.py

tests/data/torch_mlp.safetensors   the state_dict of a 3-4-2 MLP with tanh, held as
                                   `self.mlp = nn.ModuleList([...])` (names mlp.0.weight, ...)
tests/data/torch_mlp_io.safetensors an input batch and PyTorch's output for it
"""
from pathlib import Path

import torch
from safetensors.torch import save_file

torch.manual_seed(20261201)


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = torch.nn.ModuleList([torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)])

    def forward(self, x):
        return self.mlp[1](torch.tanh(self.mlp[0](x)))


model = Model()
x = torch.randn(5, 3)
with torch.no_grad():
    y = model(x)
out = Path(__file__).resolve().parent.parent / "tests" / "data"
out.mkdir(parents=True, exist_ok=True)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "torch_mlp.safetensors"))
save_file({"input": x.contiguous(), "expected": y.contiguous()}, str(out / "torch_mlp_io.safetensors"))
print("wrote", sorted(model.state_dict().keys()), "and input/expected", tuple(x.shape), tuple(y.shape))
