"""The Hack base class: the plugin API (v3).

A hack is a class with metadata, typed parameters and hooks. Every hook's default is
the identity (or "not used"), so a hack overrides only what it changes. The training
loop names no hack: it calls the enabled hacks' hooks, in call order (canonical order —
the eleven built-ins in the README's table order, then plugins sorted by name — except
where hacks declare ``before``/``after``; :func:`ablate.hacks.registry.call_order`), at these
points.

Set-up, once per run (``ablate.training.resolve`` and ``ablate.training.loop.build``):

1. :meth:`Hack.apply` ``(recipe) -> Recipe`` — fold the hack's choices into the all-off
   :class:`~ablate.hacks.recipe.Recipe` (every built-in uses only this hook). A hack that
   declares ``overrides = ("other",)`` is folded after ``other``.
2. :meth:`Hack.wrap_generator` / :meth:`Hack.wrap_discriminator` ``(module, recipe) ->
   module`` — wrap or modify the built, initialised G and D (spectral norm, a
   minibatch-stddev layer). They receive the final Recipe (its ``init``, and
   ``d_update``: in ``mixed`` mode D sees ``cat([real, fake])``, real first), and a
   :class:`WrapInfo` (batch size, image shape, ...) where the override has an ``info``
   parameter.
3. :meth:`Hack.sampling_generator` ``(generator, recipe) -> module`` — the generator
   used for ``samples.png``, validation FID, ``generator.pt`` / ``generator_best.pt``
   and so for evaluation (e.g. an EMA copy). It must have G's ``state_dict`` keys.
   At most one enabled hack may override it.

Each training step (one generator update; only when some enabled hack overrides one of
these hooks — otherwise the loop runs its plain path and calls none of them):

4. ``recipe.d_steps`` times, a discriminator update. ``mixed``: one update on
   ``x = cat([real, fake])``; ``separate``: one update on ``real``, then one on
   ``fake``. For each update (``ctx.index`` 0, 1, ... within the step):

   a. :meth:`Hack.augment` ``(x, ctx) -> x`` on D's input (every enabled hack's, in
      order; differentiable, same shape); ``ctx.side`` says which batch it is:
      ``"real"``, ``"fake"``, ``"mixed"`` (``ctx.n_real`` real rows first);
   b. D's forward pass; :class:`DContext` holds its inputs, outputs, targets and
      features (the input of D's last convolution);
   c. loss = :meth:`Hack.d_loss` ``(ctx)`` (replaces the adversarial loss; default:
      binary cross-entropy against the Recipe's targets) + the sum of every
      :meth:`Hack.d_penalty` ``(ctx)`` (R1, gradient penalties); backward; step;
   d. :meth:`Hack.after_d_update` ``(ctx)`` of every enabled hack (weight clipping,
      statistics of D's logits), with the update's :class:`DContext` (logits detached).

5. The generator update on the last fake batch: :meth:`Hack.augment` on the fakes
   (``ctx.side == "g"``), D's forward pass, loss = :meth:`Hack.g_loss` ``(ctx)``
   (replaces the non-saturating loss) + the sum of every :meth:`Hack.g_penalty`
   ``(ctx)``; backward; step.
6. :meth:`Hack.after_step` ``(ctx)`` for every enabled hack (EMA, schedules).

Every context carries the run: ``step`` (generator updates done before this one),
``steps`` (the run's total), ``g``, ``d``, ``opt_g``, ``opt_d``, ``rng``, and
``log(name, value)``, which writes the mean of a window's values as an extra key of
``log.jsonl``'s record at the end of each log window (:class:`ablate.training.loop.HackLog`).

At most one enabled hack may replace each of ``d_loss``, ``g_loss`` and
``sampling_generator``, and no two may set the same Recipe field, unless one
declares that it overrides the other (``overrides = ("other-hack",)``); the run's
``config.json`` then records the override. A plugin that sets a field a built-in sets
overrides it without declaring so (plugins fold after built-ins; recorded as implicit).
How hooks are called and checked (:mod:`ablate.hacks.hooks`): hooks that return the wrong
type raise :class:`~ablate.errors.ConfigError` naming the hack and the hook; any other
exception raised inside a hook comes out as :class:`HookError` (a ConfigError) naming the
hack and the hook, with the original as its cause. Old-style wrappers
``wrap_generator(self, module)`` (without the Recipe) keep working.

Per-run state: each run instantiates its enabled hacks afresh (``ablate.training.resolve``), so
an instance belongs to one run. A run's identity is the enabled hacks' names,
parameters and versions: hooks must be functions of those, their inputs and the state
the run accumulates. Randomness in per-step hooks should come from ``ctx.rng`` (seeded
from the run's seed, separate from the loop's own stream). Training checkpoints
(:mod:`ablate.training.checkpoint`) save the modules' ``state_dict``, ``ctx.rng``, the
``ctx.log`` window and what :meth:`Hack.state_dict` returns (given back through
:meth:`Hack.load_state_dict` on resume): keep per-run state in parameters or buffers
of the modules you return, or return it from ``state_dict()``; a plain attribute that
``state_dict()`` does not return is lost on resume.

Example — an R1 penalty (Mescheder et al. 2018), a complete plugin: the README's "Writing a
hack"; ``examples/ablate-paper-tricks/ablate_paper_tricks/r1.py`` ships one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ablate.hacks import hooks as _hooks
from ablate.hacks import metadata
from ablate.hacks.recipe import Recipe

# Hook names and dispatch live in ablate.hacks.hooks; importable from here as before.
from ablate.hacks.hooks import (BUILD_HOOKS, EXCLUSIVE_HOOKS, HOOKS, STEP_HOOKS, HookError,  # noqa: F401
                                call_apply, call_hook, call_wrapper)

if TYPE_CHECKING:  # annotations only: the registry (and `ablate hacks`) need no torch
    import torch
    from torch import nn

@dataclass(frozen=True)
class NoParams:
    """Parameters of a hack that has none."""


# Which batch :meth:`Hack.augment` receives (``StepContext.side``), and which sides a D
# update holds (``DContext.side``).
SIDES = ("real", "fake", "mixed", "g")


@dataclass(frozen=True)
class WrapInfo:
    """What a wrapper (:meth:`Hack.wrap_generator`, :meth:`Hack.wrap_discriminator`,
    :meth:`Hack.sampling_generator`) may need beyond the Recipe: the run's
    ``batch_size`` (real images per D update, fakes per G update), ``image_shape``
    ``(C, H, W)`` of D's input images, ``latent_dim`` (G's input ``(n, latent_dim, 1,
    1)``), ``ngf``/``ndf``, ``d_batch`` (rows D receives in one forward pass of a D update:
    ``2 * batch_size`` with ``d_update = "mixed"``, else ``batch_size``) and ``device``
    (where the modules go after the wrappers). A wrapper receives it when its override
    has a parameter named ``info`` (``def wrap_discriminator(self, d, recipe, info)``);
    other signatures are called as before."""

    batch_size: int
    image_shape: tuple[int, int, int]
    latent_dim: int
    ngf: int
    ndf: int
    d_batch: int
    device: str = "cpu"


def _discard(name: str, value: Any) -> None:
    """``ctx.log`` of a context built outside the training loop: the value goes nowhere."""


# --------------------------------------------------------------------------------------
# What the per-step hooks receive
# --------------------------------------------------------------------------------------
@dataclass
class StepContext:
    """The run as :meth:`Hack.augment` and :meth:`Hack.after_step` see it.

    ``step`` counts the generator updates completed before the current one (0 during
    the first step; in :meth:`Hack.after_step` it already includes the step just done).
    ``g`` and ``d`` are the trained modules (after the wrappers), ``g_sample`` the
    generator that is sampled and saved (``g`` unless a hack's
    :meth:`Hack.sampling_generator` returned another), ``opt_g``/``opt_d`` the
    optimizers (Adam, or RMSprop where the Recipe's optimizer says so), ``rng`` a generator on the run's device for hooks' random draws.
    ``loss_d``/``loss_g`` hold the last losses (detached) in :meth:`Hack.after_step`.

    ``side`` (in :meth:`Hack.augment`) says which batch it receives: ``"real"`` or
    ``"fake"`` (a D update of separate batches), ``"mixed"`` (``cat([real, fake])``,
    real first, ``n_real`` rows of it), or ``"g"`` (G's fakes in the generator update,
    with gradient); ``index`` is the D update's index within the step (0, 1, ...;
    separate batches count two updates per ``d_steps``). ``log(name, value)`` adds a
    number to ``log.jsonl`` (averaged over the log window; :class:`ablate.training.loop.HackLog`).
    """

    recipe: Recipe
    steps: int  # the run's total number of generator updates
    g: nn.Module
    d: nn.Module
    g_sample: nn.Module
    opt_g: Any
    opt_d: Any
    rng: torch.Generator
    device: torch.device
    step: int = 0
    loss_d: torch.Tensor | None = None
    loss_g: torch.Tensor | None = None
    side: str | None = None
    index: int = 0
    n_real: int = 0
    log: Callable[[str, Any], None] = _discard


@dataclass
class DContext:
    """One discriminator update, as :meth:`Hack.d_loss` / :meth:`Hack.d_penalty` see it.

    ``real``/``fake`` are D's inputs after augmentation (``fake`` detached from G),
    ``out_real``/``out_fake`` D's logits, shape (n,), ``t_real``/``t_fake`` the Recipe's
    targets, ``features_real``/``features_fake`` D's features (the input of its last
    convolution; None if D has none); under a wrapper that packs k inputs per logit
    (PacGAN) the logits, features and targets have one row per pack, real packs and fake
    packs split apart (:func:`ablate.training.steps.split_packed`). With ``d_update = "separate"`` each update holds one
    side and the other side's fields are None. ``discriminate(x) -> (logits, features)``
    runs D (as the loop calls it, without augmentation) on any batch.

    Run information (API v3): ``steps`` (the run's total generator updates), ``g``,
    ``d``, ``opt_g``, ``opt_d`` (as in :class:`StepContext`), ``index`` (this D update's
    index within the step), ``side`` (``"real"``, ``"fake"`` or ``"mixed"``) and
    ``log(name, value)``. :meth:`Hack.after_d_update` receives the same context after
    the optimizer step (the logits as D gave them before it).
    """

    step: int
    recipe: Recipe
    real: torch.Tensor | None
    fake: torch.Tensor | None
    out_real: torch.Tensor | None
    out_fake: torch.Tensor | None
    t_real: torch.Tensor | None
    t_fake: torch.Tensor | None
    features_real: torch.Tensor | None
    features_fake: torch.Tensor | None
    discriminate: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
    rng: torch.Generator
    steps: int = 0
    g: nn.Module | None = None
    d: nn.Module | None = None
    opt_g: Any = None
    opt_d: Any = None
    index: int = 0
    side: str = "mixed"
    log: Callable[[str, Any], None] = _discard
    previous: Callable[[DContext], torch.Tensor] | None = None


@dataclass
class GContext:
    """The generator update, as :meth:`Hack.g_loss` / :meth:`Hack.g_penalty` see it.

    ``fake`` is G's output after augmentation (gradients flow to G), ``out_fake`` D's
    logits on it, ``features_fake`` D's features of it; ``real`` is the real batch of the
    last D update as D saw it (after augmentation, detached). ``discriminate`` as in
    :class:`DContext` (e.g. ``discriminate(ctx.real)`` for features of real data under
    the current D). Run information as in :class:`DContext`: ``steps``, ``g``, ``d``,
    ``opt_g``, ``opt_d``, ``log(name, value)``.

    ``previous(ctx) -> loss`` (in :meth:`Hack.g_loss`): the loss this hack replaces — the
    g_loss of the enabled hack it overrides, else the non-saturating loss — computed on
    the context given (e.g. ``dataclasses.replace(ctx, out_fake=..., fake=...)`` restricted
    to some samples), so losses compose (top-k over hinge). :class:`DContext` has the same
    for :meth:`Hack.d_loss` (default: the binary cross-entropy).
    """

    step: int
    recipe: Recipe
    real: torch.Tensor
    fake: torch.Tensor
    out_fake: torch.Tensor
    features_fake: torch.Tensor | None
    discriminate: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
    rng: torch.Generator
    steps: int = 0
    g: nn.Module | None = None
    d: nn.Module | None = None
    opt_g: Any = None
    opt_d: Any = None
    log: Callable[[str, Any], None] = _discard
    previous: Callable[[GContext], torch.Tensor] | None = None


# --------------------------------------------------------------------------------------
# The base class
# --------------------------------------------------------------------------------------
class Hack:
    """Base class of every hack. Subclass it, set the metadata, override hooks.

    Class attributes:
        name: the registry key, lowercase words joined by dashes (``"label-smoothing"``);
            not ``all``, ``builtin`` or ``none`` (selection keywords).
        source: where the hack comes from (paper, talk, list).
        on: one line saying what the hack does when enabled.
        off: one line saying what the baseline does instead.
        Params: a frozen dataclass of typed parameters, each with a default (types:
            bool, int, float, str, Literal, unions with None, tuples,
            ``Annotated[float, Bounds(...)]``; see :mod:`ablate.hacks.params`).
        conflicts: names of hacks that cannot be enabled together with this one.
        overrides: names of hacks whose Recipe fields or exclusive hooks this one
            deliberately overrides when both are enabled (folded after them).
        before / after: names of hacks whose hooks and wrappers this one's must run
            before / after when both are enabled (call order; see
            :func:`ablate.hacks.registry.call_order`). Names not enabled are ignored.
        version: the hack's version, part of run keys; None (default) takes the version
            of the distribution that provides it. Bump it when results change.
    """

    name: ClassVar[str]
    source: ClassVar[str] = ""
    on: ClassVar[str] = ""
    off: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    conflicts: ClassVar[tuple[str, ...]] = ()
    overrides: ClassVar[tuple[str, ...]] = ()
    before: ClassVar[tuple[str, ...]] = ()
    after: ClassVar[tuple[str, ...]] = ()
    version: ClassVar[str | None] = None

    def __init__(self, params: Any | None = None) -> None:
        self.params = params if params is not None else self.Params()

    # ----- set-up hooks ---------------------------------------------------------------
    def apply(self, recipe: Recipe) -> Recipe:
        """Return the Recipe with this hack's choices folded in. A pure function of
        ``recipe`` and the parameters: it is called many times per run (the fold, and on
        other Recipes to find the fields it sets)."""
        return recipe

    def wrap_generator(self, generator: nn.Module, recipe: Recipe | None = None) -> nn.Module:
        """Wrap or modify the built and initialised generator."""
        return generator

    def wrap_discriminator(self, discriminator: nn.Module, recipe: Recipe | None = None
                           ) -> nn.Module:
        """Wrap or modify the built and initialised discriminator."""
        return discriminator

    def sampling_generator(self, generator: nn.Module, recipe: Recipe | None = None
                           ) -> nn.Module:
        """The generator to sample, validate and save (same ``state_dict`` keys as G)."""
        return generator

    def describe_wrap(self) -> dict[str, Any] | None:
        """What this hack's wrappers changed that the Recipe does not say (a JSON-ready
        dict, e.g. ``{"d": "PacGAN2: 2 images per D input"}``), recorded in the run's
        config.json under ``"wrapped"``; called after the wrappers. None: nothing."""
        return None

    # ----- per-step hooks -------------------------------------------------------------
    def augment(self, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Transform a batch of D inputs (real, fake or both); differentiable."""
        return x

    def d_loss(self, ctx: DContext) -> torch.Tensor:
        """Replace D's adversarial loss (sides absent from ``ctx`` are None)."""
        raise NotImplementedError  # never called unless overridden

    def d_penalty(self, ctx: DContext) -> torch.Tensor | None:
        """A scalar added to D's loss (None: nothing this update)."""
        return None

    def after_d_update(self, ctx: DContext) -> None:
        """Called after each discriminator update's optimizer step (weight clipping,
        statistics of D's logits). ``ctx`` is the update's :class:`DContext`."""

    def g_loss(self, ctx: GContext) -> torch.Tensor:
        """Replace G's adversarial (non-saturating) loss."""
        raise NotImplementedError  # never called unless overridden

    def g_penalty(self, ctx: GContext) -> torch.Tensor | None:
        """A scalar added to G's loss (None: nothing this update)."""
        return None

    def after_step(self, ctx: StepContext) -> None:
        """Called after each generator update (EMA, schedules)."""

    # ----- per-run state --------------------------------------------------------------
    def state_dict(self) -> dict[str, Any] | None:
        """This hack's per-run state kept outside its modules (None: none), saved in the
        run's training checkpoint and given back by :meth:`load_state_dict` on resume.
        Values: tensors, numbers, strings, and lists/dicts of them."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (called before the first resumed step)."""

    # ----- introspection --------------------------------------------------------------
    @classmethod
    def hooks(cls) -> frozenset[str]:
        """The hook points this class overrides (``{"apply"}`` for every built-in)."""
        return frozenset(h for h in HOOKS if getattr(cls, h) is not getattr(Hack, h))

    @classmethod
    def takes_recipe(cls, hook: str) -> bool:
        """Whether a wrapper override accepts the Recipe (old plugins take the module only)."""
        return _hooks.takes_recipe(getattr(cls, hook))

    @classmethod
    def takes_info(cls, hook: str) -> bool:
        """Whether a wrapper override has a parameter named ``info`` (a :class:`WrapInfo`)."""
        return _hooks.takes_info(getattr(cls, hook))

    # ----- parameters (ablate.hacks.metadata) ----------------------------------------
    @classmethod
    def param_fields(cls) -> dict[str, tuple[Any, Any]]:
        """``{param: (type, default)}`` with types resolved from annotations."""
        return metadata.param_fields(cls)

    @classmethod
    def make_params(cls, values: dict[str, Any] | None = None) -> Any:
        """Build ``Params`` from ``values`` (CLI strings and TOML values are coerced by
        type); every parameter, defaults included, is checked against its type."""
        return metadata.make_params(cls, values)

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Metadata as a JSON-ready dict (``registry.describe`` adds provider and version)."""
        return metadata.describe(cls)

    def params_dict(self) -> dict[str, Any]:
        """This instance's parameters as a JSON-ready dict."""
        return metadata.params_dict(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"
