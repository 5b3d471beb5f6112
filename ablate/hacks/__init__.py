"""The plugin API and the eleven built-in hacks.

One home for what a hack author reads: :mod:`~ablate.hacks.hack` (the ``Hack`` base class,
its hooks and contexts), :mod:`~ablate.hacks.recipe` (the architecture and optimisation
fields hacks set), :mod:`~ablate.hacks.params` (typed hack parameters),
:mod:`~ablate.hacks.registry` (names, providers, entry points),
:mod:`~ablate.hacks.interactions` (how several hacks fold into one Recipe), and the
built-ins in :mod:`~ablate.hacks.dcgan` and :mod:`~ablate.hacks.ganhacks`
(:data:`ablate.hacks.builtin.BUILTIN` lists them). Plugins import from ``ablate`` itself.

Importing this package loads nothing: plain configuration imports ``params`` from here
without the hooks or torch.
"""
