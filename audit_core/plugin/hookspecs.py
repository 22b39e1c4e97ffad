"""The plugin hooks of the ``audit`` project.

Every hook follows the registration-by-callback style of simonw/llm: the core calls the hook with a
``register`` function and the plugin calls it once per thing it provides. A plugin module looks like::

    from audit_core import hookimpl

    @hookimpl
    def register_attacks(register):
        register("my-attack", "my_package.attack:MyAttack")   # by reference: imported on first use
        # or register(MyAttack), the class itself: imported whenever the hook runs

Each ``register`` takes the object, or a name and a ``"module:attr"`` reference to it
(``audit_core/lazyref.py``). A reference keeps ``audit --help`` and ``audit plugins`` (which
calls every hook) from importing the implementation and torch; the module is imported when the
name is first used (looked up, built, read from ``plugins.registry``). A reference whose module
is missing, fails to import or holds the wrong kind of object disables the plugin that registered
it, as a hook that raises does.

Plugins are discovered through the entry-point group ``audit`` (see ``audit_core.plugins``).
A hookimpl whose name matches no spec below is rejected at load time.
"""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("audit")
hookimpl = HookimplMarker("audit")


@hookspec
def register_targets(register):
    """Register target model adapters.

    Call ``register(TargetClass)``, or ``register(name, "module:TargetClass")`` to import it on
    first use, for each subclass of ``audit_core.targets.Target``. The class attribute ``name`` is what ``target.plugin`` selects in audit.yaml, ``Params`` (a pydantic
    model) validates the rest of the ``target:`` mapping, and ``capabilities`` declares the access
    it serves: ``"variation"`` (black-box image-variation API) and/or ``"noise"`` (grey-box noise
    prediction)."""


@hookspec
def register_attacks(register):
    """Register membership-inference attacks.

    Call ``register(AttackClass)``, or ``register(name, "module:AttackClass")`` to import it on
    first use, for each subclass of ``audit_core.attacks.Attack``. ``name`` is
    what ``attacks[].plugin`` selects, ``Params`` validates ``attacks[].params`` and ``requires``
    names the access levels it needs; the runner refuses a target that cannot serve them."""


@hookspec
def register_distances(register):
    """Register image distances for attacks that compare images.

    Call ``register(name, fn)`` (or ``register(name, "module:fn")``, imported on first use) where
    ``fn(a, b) -> Tensor[B]`` takes two batches of images in [-1, 1] and returns one distance per
    image, lower meaning closer."""


@hookspec
def register_reporters(register):
    """Register reporters that turn a finished run directory into reports.

    Call ``register(ReporterClass)`` (or ``register(name, "module:ReporterClass")``, imported on
    first use) for each subclass of ``audit_core.reporting.Reporter``; it is
    selected by ``reports[].plugin`` and re-run by ``audit report RUN_DIR``."""


@hookspec
def register_executors(register):
    """Register executors that run attack batches (in-process by default, Ray, ...).

    Call ``register(ExecutorClass)`` (or ``register(name, "module:ExecutorClass")``, imported on
    first use) for each subclass of ``audit_core.executors.Executor``, selected by
    ``run.executor.plugin``."""


@hookspec
def register_datasets(register):
    """Register data sources usable in ``data:`` as ``builtin:NAME/SUBSET`` or ``data.dataset``.

    Call ``register(name, loader)`` (or ``register(name, "module:loader")``, imported on first use)
    where ``loader(subset: str, options: dict) -> list[ImageRecord]``
    returns image records (see ``audit_core.data``). Raise ``DataError`` naming the expected files
    when the data is missing."""


@hookspec
def register_commands(cli):
    """Add commands to the ``audit`` CLI.

    ``cli`` is the root ``typer.Typer`` app: add a command with ``@cli.command()`` or a group with
    ``cli.add_typer(sub_app, name=...)``."""


@hookspec
def register_generators(register):
    """Register text-to-image generators for ``audit reference build`` (caption-matched reference
    sets made by a model that is *not* the audited one).

    Call ``register(GeneratorClass)`` (or ``register(name, "module:GeneratorClass")``, imported on
    first use) for each subclass of ``audit_core.generators.Generator``;
    ``name`` is what ``--generator`` selects and ``Params`` validates its ``--param KEY=VALUE``."""
