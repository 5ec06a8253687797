"""One cross-fit part's R-Net / C-Net training on several processes: what each process started by
:func:`facelib.fitting.distributed.launch` runs for :func:`facelib.fitting.crossfit.rnet_tables` (``processes`` > 1).

Each process gets the network's starting weights, the settings and the part's training inputs, rebuilds the training
loss (the morphable model, the :class:`~facelib.fitting.fitter.Fitter`, the :class:`~facelib.fitting.rnet_train.Composer`)
on its own device (``s``: the part's :class:`facelib.fitting.crossfit.RNetSettings`), trains its share of every global batch, and returns (from rank 0) the trained weights, the history
and torch's random state, which the calling process takes over to continue as a one-process run would.
"""
from __future__ import annotations

import torch

from ..face3d import rnet as R
from ..face3d.morphable import MorphableModel
from . import rnet_train as T
from .cnet import CNet
from .fitter import Fitter
from .table import dlib_embedder
from .texture import load_texture_basis, with_texture


def morphable(assets_dir, texture) -> MorphableModel:
    """The 3DDFA morphable model, with the texture basis ``texture`` when given."""
    model = MorphableModel.from_3ddfa(assets_dir)
    return model if texture is None else with_texture(model, load_texture_basis(texture))


def composer(model: MorphableModel, s, device, assets_dir, embedder=None) -> T.Composer:
    """The training loss of settings ``s`` (the hybrid loss through the coarse mesh's rendering)."""
    fitter = Fitter(model, device=device, assets_dir=assets_dir, image_size=s.image_size)
    return T.Composer(fitter, s.weights, embedder=embedder, mesh_vertices=s.mesh_vertices)


def cpu_state(net: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}


def rank_composer(s, texture, assets_dir, device) -> T.Composer:
    """One training process's own copy of the training loss (rebuilt there, on the process's device)."""
    return composer(morphable(assets_dir, texture), s, device, assets_dir, dlib_embedder() if s.perceptual else None)


def train_rnet_part(state: dict, s, n_tex: int, train: T.TrainData, kw: dict, texture, assets_dir,
                     device) -> tuple[dict, dict, torch.Tensor]:
    """One process of a several-process R-Net training (:func:`facelib.fitting.distributed.launch`): the network
    from ``state``, :func:`facelib.fitting.rnet_train.train_rnet` on ``train``; (trained weights, history, torch's
    random state after the training, which the calling process takes over to continue as a one-process run)."""
    net = R.RNet(s.backbone, n_tex)
    net.load_state_dict(state)
    hist = T.train_rnet(net, rank_composer(s, texture, assets_dir, device), train, **kw)
    return cpu_state(net), hist, torch.get_rng_state()


def train_cnet_part(state: dict, s, n_alpha: int, train: T.TrainData, coeffs: dict, features,
                     kw: dict, texture, assets_dir, device) -> tuple[dict, dict, torch.Tensor]:
    """One process of a several-process C-Net training: (trained weights, history, torch's random state)."""
    cnet = CNet(features.shape[1], n_alpha)
    cnet.load_state_dict(state)
    hist = T.train_cnet(cnet, rank_composer(s, texture, assets_dir, device), train, coeffs, features, **kw)
    return cpu_state(cnet), hist, torch.get_rng_state()
