"""The plugin API and the eleven built-in hacks.

One home for what a hack author reads: :mod:`~ablate.hacks.hack` (the ``Hack`` base class,
its hooks and contexts; :mod:`~ablate.hacks.hooks` calls them, :mod:`~ablate.hacks.metadata`
builds and describes their parameters), :mod:`~ablate.hacks.recipe` (the architecture and
optimisation fields hacks set), :mod:`~ablate.hacks.params` (typed hack parameters),
:mod:`~ablate.hacks.registry` (names, lookups, call order; providers, entry points and
versions in :mod:`~ablate.hacks.providers`),
:mod:`~ablate.hacks.interactions` (how several hacks fold into one Recipe), and the
built-ins in :mod:`~ablate.hacks.dcgan` and :mod:`~ablate.hacks.ganhacks`
(:data:`ablate.hacks.builtin.BUILTIN` lists them). Plugins import from ``ablate`` itself.

Importing this package loads nothing: plain configuration imports ``params`` from here
without the hooks or torch.
"""
