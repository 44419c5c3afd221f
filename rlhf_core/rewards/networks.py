"""Reward networks over states (optionally state + action) and ensembles of them.

- :class:`MLPReward`: T-REX's MuJoCo network is 2 x 256 ReLU over the state; smaller works for
  classic control; ``layers=0`` is a reward linear in the state, started at zero. Optional action input.
- :class:`CNNReward`: a small convolutional net for pixel observations (Atari-style stacks).
- :class:`RewardEnsemble`: N members, each trained on its own bootstrap of the pairs (Christiano
  et al.); the prediction is the members' mean, their spread is the disagreement used for
  active query selection.

A network maps a batch of per-step inputs [..., obs_dim] to per-step rewards [...]; a clip's or
snippet's return is the sum over its steps.

Saved files: ``*.safetensors`` (the tensors; spec, member count and ``extra`` as JSON in the header's
metadata: readable without our code or pickle) or, for older files, a ``torch.save`` dict loaded
with ``weights_only=True``. :meth:`RewardEnsemble.load` tells them apart by the file name.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn


SAFETENSORS_SUFFIX = ".safetensors"
SAFETENSORS_FORMAT = "rlhf-workbench/reward-ensemble"  # the header's "format": what the file holds


@dataclass(frozen=True)
class RewardNetSpec:
    obs_dim: int
    action_dim: int = 0  # 0: state-only
    hidden: int = 256
    layers: int = 2
    kind: str = "mlp"  # mlp | cnn
    image_shape: tuple = ()  # (C, H, W) for cnn


class MLPReward(nn.Module):
    def __init__(self, spec: RewardNetSpec):
        super().__init__()
        dims = [spec.obs_dim + spec.action_dim] + [spec.hidden] * spec.layers
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], 1))
        self.net = nn.Sequential(*layers)
        self.spec = spec
        if spec.layers == 0:
            # A linear reward has no symmetry to break: starting at zero, a weight moves only where the
            # ranked pairs pull it, so a feature the pairs never vary adds nothing to unseen returns.
            for t in self.net.parameters():
                nn.init.zeros_(t)

    def forward(self, obs: torch.Tensor, action: torch.Tensor | None = None) -> torch.Tensor:
        x = obs if action is None or self.spec.action_dim == 0 else torch.cat([obs, action], dim=-1)
        return self.net(x).squeeze(-1)


class CNNReward(nn.Module):
    """Four small conv layers then a linear head (in the spirit of T-REX's Atari network)."""

    def __init__(self, spec: RewardNetSpec):
        super().__init__()
        c, h, w = spec.image_shape
        self.spec = spec
        self.conv = nn.Sequential(
            nn.Conv2d(c, 16, 7, stride=3), nn.LeakyReLU(),
            nn.Conv2d(16, 16, 5, stride=2), nn.LeakyReLU(),
            nn.Conv2d(16, 16, 3, stride=1), nn.LeakyReLU(),
            nn.Conv2d(16, 16, 3, stride=1), nn.LeakyReLU(),
        )
        with torch.no_grad():
            n = self.conv(torch.zeros(1, c, h, w)).numel()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(n, 64), nn.LeakyReLU(), nn.Linear(64, 1))

    def forward(self, obs: torch.Tensor, action: torch.Tensor | None = None) -> torch.Tensor:
        """Per-step rewards of images ``[..., C, H, W]`` or of flattened ones ``[..., C*H*W]`` (0..255)."""
        shape = tuple(self.spec.image_shape)
        if tuple(obs.shape[-3:]) != shape:  # flattened rows, as the pair tables hold them
            obs = obs.reshape(*obs.shape[:-1], *shape)
        lead = obs.shape[:-3]
        x = obs.reshape(-1, *shape).float() / 255.0
        return self.head(self.conv(x)).reshape(lead)


def make_reward_net(spec: RewardNetSpec) -> nn.Module:
    return CNNReward(spec) if spec.kind == "cnn" else MLPReward(spec)


class RewardEnsemble(nn.Module):
    """N reward nets; ``forward`` returns per-member rewards [N, ...]."""

    def __init__(self, spec: RewardNetSpec, members: int = 3):
        super().__init__()
        self.spec = spec
        self.members = nn.ModuleList(make_reward_net(spec) for _ in range(members))

    def forward(self, obs: torch.Tensor, action: torch.Tensor | None = None) -> torch.Tensor:
        return torch.stack([m(obs, action) for m in self.members])

    @torch.no_grad()
    def predict(self, obs: torch.Tensor, action: torch.Tensor | None = None) -> torch.Tensor:
        """The ensemble's reward: mean over members."""
        return self(obs, action).mean(0)

    def save(self, path: str | Path, extra: dict | None = None) -> None:
        """Write the ensemble; a ``.safetensors`` name gives safetensors (replaced atomically), any other
        the older ``torch.save`` dict. ``extra`` (plain numbers and text) travels with it."""
        spec = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.spec).items()}
        if Path(path).suffix != SAFETENSORS_SUFFIX:
            torch.save({"spec": spec, "members": len(self.members), "state": self.state_dict(),
                        "extra": extra or {}}, path)
            return
        meta = {"format": SAFETENSORS_FORMAT, "spec": json.dumps(spec), "members": str(len(self.members)),
                "extra": json.dumps(extra or {})}
        tmp = Path(path).with_name(f".{Path(path).name}.tmp")
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(tmp), metadata=meta)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> tuple[RewardEnsemble, dict]:
        """``(ensemble in eval mode, extra)`` from a file :meth:`save` wrote (either format)."""
        if Path(path).suffix == SAFETENSORS_SUFFIX:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                state = {k: fh.get_tensor(k) for k in fh.keys()}
            if meta.get("format") != SAFETENSORS_FORMAT:
                raise ValueError(f"{Path(path).name} is not a reward ensemble saved by the workbench "
                                 f"(its header names format {meta.get('format')!r})")
            blob = {"spec": json.loads(meta["spec"]), "members": int(meta["members"]), "state": state,
                    "extra": json.loads(meta.get("extra") or "{}")}
        else:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        spec = RewardNetSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in blob["spec"].items()})
        model = cls(spec, blob["members"])
        model.load_state_dict(blob["state"])
        return model.eval(), blob.get("extra", {})
