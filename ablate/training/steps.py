"""The training loop's hook path: D and G updates that call the hacks' per-step hooks.

:func:`ablate.training.loop.train` uses these only when an enabled hack overrides a loss,
augmentation or after-D-update hook (:attr:`ablate.hacks.interactions.Hooks.per_step`); otherwise it runs its
plain updates and none of this code. The call order is documented in :mod:`ablate.hacks.hack`.
With no hook overridden these updates compute what the plain path computes (the
default losses are the same binary cross-entropies), at the cost of the bookkeeping.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from ablate.errors import ConfigError
from ablate.hacks.hack import DContext, GContext, Hack, StepContext
from ablate.hacks.hooks import call_hook
from ablate.hacks.interactions import Hooks


def last_conv(module: nn.Module) -> nn.Module | None:
    """D's last convolution, whose input is what :class:`DContext` calls D's features."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def scalar(value: object, hack: Hack, hook: str, optional: bool = False) -> torch.Tensor | None:
    """Check a loss hook's result: a one-element tensor (or None where allowed)."""
    if value is None and optional:
        return None
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        what = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
        raise ConfigError(f"hack {hack.name!r}: {hook}() must return a scalar tensor"
                          f"{' or None' if optional else ''}, got {what}")
    return value.reshape(())


def pack_size(n_in: int, n_out: int, n_real: int | None = None) -> int:
    """How many of D's input rows one of its outputs covers (1 unless a wrapper packs
    samples, as PacGAN does: ``n_in`` inputs, ``n_out`` logits). With ``n_real`` real rows
    first, packs must not straddle the real/fake boundary."""
    if n_out == n_in:
        return 1
    if n_out <= 0 or n_in % n_out or (n_real is not None and n_real % (n_in // n_out)):
        raise ConfigError(
            f"D returned {n_out} logits for {n_in} input rows"
            + (f" ({n_real} real first)" if n_real is not None else "")
            + "; a wrapper that packs samples must pack a whole number of rows per logit, "
              "real and fake rows apart (the batch size a multiple of the pack size)")
    return n_in // n_out


def pack_targets(t: torch.Tensor, n_out: int) -> torch.Tensor:
    """Targets of packed D outputs: the mean target of each pack of consecutive rows
    (``t`` itself when nothing is packed)."""
    if t.shape[0] == n_out:
        return t
    return t.reshape(n_out, -1).mean(1)


def split_packed(y: torch.Tensor | None, n_real: int, n_in: int):
    """``y`` (D's logits or features over ``n_in`` input rows, ``n_real`` real first,
    possibly packed) split into its real and fake rows."""
    if y is None:
        return None, None
    k = pack_size(n_in, y.shape[0], n_real)
    return y[:n_real // k], y[n_real // k:]


def bce_d_loss(ctx: DContext) -> torch.Tensor:
    """The default D loss: binary cross-entropy of the logits present against the targets."""
    outs = [o for o in (ctx.out_real, ctx.out_fake) if o is not None]
    targets = [t for t, o in ((ctx.t_real, ctx.out_real), (ctx.t_fake, ctx.out_fake)) if o is not None]
    if len(outs) == 1:
        return F.binary_cross_entropy_with_logits(outs[0], targets[0])
    return F.binary_cross_entropy_with_logits(torch.cat(outs), torch.cat(targets))


def ns_g_loss(ctx: GContext) -> torch.Tensor:
    """The default G loss: non-saturating, BCE of D(G(z)) against 1."""
    return F.binary_cross_entropy_with_logits(ctx.out_fake, torch.ones_like(ctx.out_fake))


class HookedUpdates:
    """D and G updates for one run through ``hooks``; ``loop`` supplies the step, the
    run's modules and optimizers, the rng and ``log``.

    :meth:`update_d` has the signature of :data:`ablate.training.loop.D_UPDATES` entries;
    :meth:`update_g` performs the G update on the last fake batch. Every hook is called
    through :func:`ablate.hacks.hack.call_hook` (an exception names the hack and the hook).
    """

    def __init__(self, hooks: Hooks, loop: StepContext, d_fwd: nn.Module, d_update: str,
                 opt_g: torch.optim.Optimizer) -> None:
        self.hooks, self.loop, self.d_fwd, self.opt_g = hooks, loop, d_fwd, opt_g
        self.mixed = d_update == "mixed"
        self._features: list[torch.Tensor] = []
        self._last_real: torch.Tensor | None = None
        uses_features = hooks.d_loss or hooks.d_penalty or hooks.g_loss or hooks.g_penalty \
            or hooks.after_d_update
        conv = last_conv(loop.d) if uses_features else None
        if conv is not None:  # keep a reference to the input of D's last conv; no copy
            conv.register_forward_hook(lambda _m, inputs, _out: self._features.append(inputs[0]))

    # ----- helpers --------------------------------------------------------------------
    def discriminate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's logits and features for ``x`` (no augmentation)."""
        self._features.clear()
        out = self.d_fwd(x)
        return out, (self._features[-1] if self._features else None)

    def augment(self, x: torch.Tensor, side: str, n_real: int = 0) -> torch.Tensor:
        """Every augment hook on ``x``, the batch of ``side`` (``ctx.side``)."""
        self.loop.side, self.loop.n_real = side, n_real
        for h in self.hooks.augment:
            y = call_hook(h, "augment", x, self.loop)
            if (not isinstance(y, torch.Tensor) or y.shape != x.shape or y.dtype != x.dtype
                    or y.device != x.device):
                got = (f"shape {tuple(y.shape)}, {y.dtype} on {y.device}" if isinstance(y, torch.Tensor)
                       else type(y).__name__)
                raise ConfigError(f"hack {h.name!r}: augment() must return a tensor of D's input "
                                  f"shape {tuple(x.shape)}, {x.dtype} on {x.device}, got {got}")
            x = y
        self.loop.side = None
        return x

    @staticmethod
    def _chained(chain: tuple[Hack, ...], hook: str, default):
        """The loss of the last hack in ``chain``, each hack's ``ctx.previous`` the loss of
        the hack before it (the first one's: ``default``)."""
        def link(i: int):
            if i < 0:
                return default
            h, below = chain[i], link(i - 1)

            def loss(ctx):
                ctx = dataclasses.replace(ctx, previous=below)
                out = scalar(call_hook(h, hook, ctx), h, hook)
                if torch.is_grad_enabled() and not out.requires_grad:
                    raise ConfigError(f"hack {h.name!r}: {hook}() returned a tensor that does not "
                                      "depend on D's outputs (no gradient to train with); compute the "
                                      "loss from the context's logits (out_real, out_fake) or ctx.previous")
                return out
            return loss
        return link(len(chain) - 1)

    def _d_loss(self, ctx: DContext) -> torch.Tensor:
        h = self.hooks.d_loss
        loss = bce_d_loss(ctx) if h is None else \
            self._chained(self.hooks.d_loss_chain or (h,), "d_loss", bce_d_loss)(ctx)
        for p in self.hooks.d_penalty:
            term = scalar(call_hook(p, "d_penalty", ctx), p, "d_penalty", optional=True)
            if term is not None:
                loss = loss + term
        return loss

    def _d_context(self, side, real, fake, out_real, out_fake, t_real, t_fake, f_real, f_fake
                   ) -> DContext:
        lp = self.loop
        return DContext(lp.step, lp.recipe, real, fake, out_real, out_fake, t_real, t_fake,
                        f_real, f_fake, self.discriminate, lp.rng, steps=lp.steps, g=lp.g, d=lp.d,
                        opt_g=lp.opt_g, opt_d=lp.opt_d, index=lp.index, side=side, log=lp.log)

    def _after_d_update(self, ctx: DContext) -> None:
        """The optimizer has stepped: every after_d_update hook, then the next index."""
        if self.hooks.after_d_update:
            ctx = dataclasses.replace(
                ctx, out_real=None if ctx.out_real is None else ctx.out_real.detach(),
                out_fake=None if ctx.out_fake is None else ctx.out_fake.detach())
            for h in self.hooks.after_d_update:
                if call_hook(h, "after_d_update", ctx) is not None:
                    raise ConfigError(f"hack {h.name!r}: after_d_update() must return None")
        self.loop.index += 1

    # ----- the updates ----------------------------------------------------------------
    def update_d(self, d: nn.Module, opt: torch.optim.Optimizer, real: torch.Tensor,
                 fake: torch.Tensor, t_real: torch.Tensor, t_fake: torch.Tensor):
        """One D update (mixed) or two (separate); returns (loss, D(real), D(fake))."""
        n = real.shape[0]
        if self.mixed:
            opt.zero_grad(set_to_none=True)
            x = self.augment(torch.cat([real, fake]), "mixed", n)
            out, f = self.discriminate(x)
            # A packing D (PacGAN) gives one logit per pack: real packs first (issue 19).
            n_in = x.shape[0]
            o_real, o_fake = split_packed(out, n, n_in)
            f_real, f_fake = split_packed(f, n, n_in)
            ctx = self._d_context("mixed", x[:n], x[n:], o_real, o_fake,
                                  pack_targets(t_real, o_real.shape[0]),
                                  pack_targets(t_fake, o_fake.shape[0]), f_real, f_fake)
            loss = self._d_loss(ctx)
            loss.backward()
            opt.step()
            self._last_real = ctx.real.detach()
            self._after_d_update(ctx)
            return loss.detach(), o_real.detach(), o_fake.detach()
        losses, outs = [], []
        for side, batch, t in (("real", real, t_real), ("fake", fake, t_fake)):
            opt.zero_grad(set_to_none=True)
            x = self.augment(batch, side, n if side == "real" else 0)
            out, f = self.discriminate(x)
            pack_size(x.shape[0], out.shape[0])
            t = pack_targets(t, out.shape[0])
            if side == "real":
                ctx = self._d_context(side, x, None, out, None, t, None, f, None)
                self._last_real = x.detach()
            else:
                ctx = self._d_context(side, None, x, None, out, None, t, None, f)
            loss = self._d_loss(ctx)
            loss.backward()
            opt.step()
            self._after_d_update(ctx)
            losses.append(loss.detach())
            outs.append(out.detach())
        return (losses[0] + losses[1]) / 2, outs[0], outs[1]

    def update_g(self, fake: torch.Tensor) -> torch.Tensor:
        """One G update on ``fake`` (not detached); returns the loss (detached)."""
        self.opt_g.zero_grad(set_to_none=True)
        x = self.augment(fake, "g")
        out, f = self.discriminate(x)
        lp = self.loop
        ctx = GContext(lp.step, lp.recipe, self._last_real, x, out, f, self.discriminate, lp.rng,
                       steps=lp.steps, g=lp.g, d=lp.d, opt_g=lp.opt_g, opt_d=lp.opt_d, log=lp.log)
        h = self.hooks.g_loss
        loss = ns_g_loss(ctx) if h is None else \
            self._chained(self.hooks.g_loss_chain or (h,), "g_loss", ns_g_loss)(ctx)
        for p in self.hooks.g_penalty:
            term = scalar(call_hook(p, "g_penalty", ctx), p, "g_penalty", optional=True)
            if term is not None:
                loss = loss + term
        loss.backward()
        self.opt_g.step()
        return loss.detach()
