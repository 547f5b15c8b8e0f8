r"""Hessian spectrum toolkit and ascent sharpness on a fixed batch.

Every function takes the model, a loss and a batch with PyHessian's calling convention:
``batch = (inputs, targets)`` and the loss is ``loss_fn(model(inputs), targets)``, a scalar.
The Hessian is taken with respect to every parameter with ``requires_grad=True``, flattened
in ``model.named_parameters()`` order, at the parameter values of the call.

What is where (everything public is re-exported here, so ``from amcl_lab.sharpness import
top_eigenvalues`` works without knowing the module):

* :mod:`.operator` - :class:`HessianOperator` / :func:`hvp`: exact Hessian-vector
  products: the graph of the first backward kept and differentiated again
  (``"double-backward"``, default) or forward-mode over reverse-mode through ``torch.func``
  (``"forward-over-reverse"``); the loss as a pure function of the flattened parameters.
* :mod:`.lanczos` - seeded random probe blocks and block Lanczos with full
  reorthogonalisation, shared by the eigenvalue, trace and density estimators.
* :mod:`.eigen` - :func:`top_eigenvalues`: block Lanczos, stopped on the certified Ritz
  residuals or on the gap-based eigenvalue-error estimates (:class:`EigenResult`).
* :mod:`.trace` - :func:`hessian_trace`: Hutchinson and Hutch++, stopped on the standard
  error (:class:`TraceResult`).
* :mod:`.density` - :func:`spectral_density`: stochastic Lanczos quadrature
  (:class:`SpectralDensity`).
* :mod:`.ascent` - :func:`ascent_sharpness`: SAM's :math:`L(w + \hat\epsilon) - L(w)`
  (adaptive and m-sharpness variants; :class:`AscentSharpness`).
* :mod:`.pyhessian` - :func:`pyhessian_reference`: the ``pyhessian`` 0.1 package on the
  same model and batch, with its released defects worked around (see its docstring;
  :class:`PyHessianResult`).

The model is never modified: parameters and buffers are copied, the running statistics of
normalisation layers are never updated, and every module's train/eval flag is restored.
``mode="eval"`` (default) evaluates BatchNorm with its running statistics and dropout off;
``mode="train"`` uses batch statistics (and one fixed dropout mask per operator).  Every
result records the mode and the HVP method.  Each function's docstring cites the papers it
implements; ``docs/benchmarks.md`` measures the estimators' products, time and accuracy
against PyHessian (Yao et al. 2020, arXiv:1912.07145) and ``docs/results.md`` reports the
sharpness experiment that uses them.
"""

from __future__ import annotations

from .ascent import AscentSharpness, ascent_sharpness
from .density import SpectralDensity, spectral_density
from .eigen import STOPPING as STOPPING
from .eigen import WHICH as WHICH
from .eigen import EigenResult, top_eigenvalues
from .operator import HVP_METHODS as HVP_METHODS
from .operator import MODES as MODES
from .operator import HessianOperator, hvp
from .operator import LossFn as LossFn
from .pyhessian import PyHessianResult, pyhessian_reference
from .trace import TRACE_METHODS as TRACE_METHODS
from .trace import TraceResult, hessian_trace

__all__ = [
    "AscentSharpness",
    "EigenResult",
    "HessianOperator",
    "PyHessianResult",
    "SpectralDensity",
    "TraceResult",
    "ascent_sharpness",
    "hessian_trace",
    "hvp",
    "pyhessian_reference",
    "spectral_density",
    "top_eigenvalues",
]
