"""Serving entry points run as inference whatever mode the model was left in after training."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

F = TypeVar("F", bound=Callable)


def inference(method: F) -> F:
    """Decorate a method of an ``nn.Module`` (or of a wrapper holding one as ``.model``): it runs without
    autograd and with dropout / BatchNorm in eval mode, and the module's own mode is restored after. A model
    straight from training is in train mode, where one serving call would move BatchNorm's running stats."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        module: nn.Module = self if isinstance(self, nn.Module) else self.model
        modes = [(m, m.training) for m in module.modules()]  # each submodule's own mode, restored after
        module.eval()
        try:
            with torch.no_grad():
                return method(self, *args, **kwargs)
        finally:
            for m, training in modes:
                m.training = training

    return run  # type: ignore[return-value]
