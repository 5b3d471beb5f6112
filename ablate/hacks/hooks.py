"""Hook dispatch: the hook names, and how a hack's hooks are called and checked.

The hooks themselves — their signatures, defaults and the points at which the training
loop calls them — are the :class:`~ablate.hacks.hack.Hack` base class's
(:mod:`ablate.hacks.hack`). This module is how they are called:

* :data:`HOOKS` — every hook name in call order (:data:`BUILD_HOOKS` once per run,
  :data:`STEP_HOOKS` every step); :data:`EXCLUSIVE_HOOKS` those that replace something,
  which at most one enabled hack may override (:func:`ablate.hacks.interactions.check`);
* :func:`call_hook` — any hook, an exception other than :class:`~ablate.errors.ConfigError`
  raised inside it re-raised as :class:`HookError` naming the hack and the hook (the
  original is its ``__cause__``), a ConfigError prefixed with the hack and the hook;
* :func:`call_apply` / :func:`call_wrapper` — the set-up hooks, checked to return a
  :class:`~ablate.hacks.recipe.Recipe` / a ``torch.nn.Module``; a wrapper gets the
  Recipe where its override takes it (:func:`takes_recipe`: old-style wrappers
  ``wrap_generator(self, module)`` keep working) and ``info=`` (a
  :class:`~ablate.hacks.hack.WrapInfo`) where it has a parameter named ``info``
  (:func:`takes_info`).

The hook names, :class:`HookError` and the ``call_*`` functions are importable from
:mod:`ablate.hacks.hack` as well, as before. No torch at import time: the registry and
``ablate hacks`` import this module without it.
"""

from __future__ import annotations

import inspect
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ablate.errors import ConfigError
from ablate.hacks.recipe import Recipe

if TYPE_CHECKING:  # annotations only: hack.py imports this module
    from torch import nn

    from ablate.hacks.hack import Hack, WrapInfo

# Hook names, in call order. BUILD_HOOKS run once per run; STEP_HOOKS every step.
BUILD_HOOKS = ("apply", "wrap_generator", "wrap_discriminator", "sampling_generator")
STEP_HOOKS = ("augment", "d_loss", "d_penalty", "after_d_update", "g_loss", "g_penalty",
              "after_step")
HOOKS = BUILD_HOOKS + STEP_HOOKS
# Hooks that replace something: at most one enabled hack may override each.
EXCLUSIVE_HOOKS = ("d_loss", "g_loss", "sampling_generator")


# --------------------------------------------------------------------------------------
# Old and new signatures of the wrappers
# --------------------------------------------------------------------------------------
def takes_recipe(method: Callable[..., Any]) -> bool:
    """Whether a wrapper override (a function, ``self`` first) accepts the Recipe (old
    plugins take the module only)."""
    sig = inspect.signature(method)
    positional = [p for p in sig.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.name != "info"]
    return len(positional) >= 3 or any(p.kind is p.VAR_POSITIONAL for p in sig.parameters.values())


def takes_info(method: Callable[..., Any]) -> bool:
    """Whether a wrapper override has a parameter named ``info`` (a WrapInfo)."""
    return "info" in inspect.signature(method).parameters


# --------------------------------------------------------------------------------------
# Calling hooks with type checks (the loop and resolve use these)
# --------------------------------------------------------------------------------------
class HookError(ConfigError):
    """An exception raised inside a hack's hook, re-raised naming the hack and the hook
    (a :class:`ConfigError`: ``ablate train`` exits 2, a grid fails only that run). The
    original exception is its ``__cause__``."""


def call_hook(hack: Hack, hook: str, *args: Any, **kwargs: Any) -> Any:
    """``hack.<hook>(*args)``; an exception other than :class:`ConfigError` comes out as
    :class:`HookError` naming the hack, the hook and the original exception."""
    try:
        return getattr(hack, hook)(*args, **kwargs)
    except ConfigError as exc:
        if str(exc).startswith(f"hack {hack.name!r}"):
            raise
        raise ConfigError(f"hack {hack.name!r}: {hook}(): {exc}") from exc
    except Exception as exc:
        raise _raised(hack.name, hook, exc) from exc
    except (SystemExit, KeyboardInterrupt) as exc:
        # The process is told to stop (submitit's requeue exits from its SIGUSR2 handler;
        # Ctrl-C): obey. The hook's own sys.exit() or KeyboardInterrupt would end a pool
        # worker without a word, or stop the grid blaming its workers: that run fails.
        if _from_signal_handler(exc) or _may_be_ctrl_c(exc):
            raise
        raise _raised(hack.name, hook, exc) from exc


def _from_signal_handler(exc: BaseException) -> bool:
    """Whether ``exc`` passed through an installed Python signal handler (a scheduler ending
    the process mid-hook) rather than coming from the hook's own code."""
    codes = set()
    for sig in signal.valid_signals():
        handler = signal.getsignal(sig)
        code = getattr(getattr(handler, "__func__", handler), "__code__", None)
        if code is not None:
            codes.add(code)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in codes:
            return True
        tb = tb.tb_next
    return False


def _may_be_ctrl_c(exc: BaseException) -> bool:
    """Whether ``exc`` may be a real Ctrl-C: a KeyboardInterrupt while SIGINT has Python's
    default handler, which raises it from C, leaving no frame to tell it from the hook's own
    (a library call). The CLI's and the grid's handlers are Python code and pool workers
    ignore SIGINT, so there a KeyboardInterrupt that :func:`_from_signal_handler` does not
    claim is the hook's."""
    return (isinstance(exc, KeyboardInterrupt)
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)


def _raised(name: str, hook: str, exc: BaseException) -> HookError:
    """The :class:`HookError` for ``exc`` raised in hack ``name``'s ``hook``."""
    first = str(exc).strip().splitlines()
    return HookError(f"hack {name!r}: {hook}() raised {type(exc).__name__}"
                     f"{': ' + first[0] if first else ''}")


def construct(cls: type[Hack], params: Any) -> Hack:
    """``cls(params)``: an exception in a plugin's ``__init__`` comes out as
    :class:`HookError` naming the hack, as one in a hook does."""
    try:
        return cls(params)
    except ConfigError:
        raise
    except (Exception, SystemExit) as exc:
        raise _raised(cls.name, "__init__", exc) from exc


def call_apply(hack: Hack, recipe: Recipe) -> Recipe:
    """``hack.apply(recipe)``, checked: a Recipe comes back, bad values name the hack."""
    out = call_hook(hack, "apply", recipe)
    if not isinstance(out, Recipe):
        raise ConfigError(f"hack {hack.name!r}: apply() must return a Recipe, got "
                          f"{type(out).__name__} (return recipe.replace(...))")
    return out


def call_wrapper(hack: Hack, hook: str, module: nn.Module, recipe: Recipe,
                 info: WrapInfo | None = None) -> nn.Module:
    """``hack.wrap_generator`` / ``wrap_discriminator`` / ``sampling_generator``, with the
    Recipe where the override takes it and ``info=`` where it has an ``info`` parameter,
    checked to return an ``nn.Module``."""
    from torch import nn  # torch is loaded by now (modules exist); not at import time

    args = (module, recipe) if type(hack).takes_recipe(hook) else (module,)
    kwargs = {"info": info} if info is not None and type(hack).takes_info(hook) else {}
    out = call_hook(hack, hook, *args, **kwargs)
    if not isinstance(out, nn.Module):
        raise ConfigError(f"hack {hack.name!r}: {hook}() must return a torch.nn.Module, got "
                          f"{type(out).__name__} (return the module, modified or wrapped)")
    return out
