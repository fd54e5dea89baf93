"""Run code around the import of a module that labelfix itself does not import yet.

``import labelfix`` and ``labelfix --help`` must not import Keras or TensorFlow, yet labelfix has
to act when they are imported: register its Keras objects right after ``import keras``, keep
TensorFlow's native start-up lines off the CLI's stderr during ``import tensorflow``. An
:class:`ImportHook` in ``sys.meta_path`` wraps the module's execution for that one import.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType


class ImportHook:
    """Finds ``fullname`` like the other finders, but executes it as ``around(run, module)``
    (``run(module)`` executes it), once; then leaves ``sys.meta_path``.

    A meta path finder is any object with ``find_spec``: not deriving from
    ``importlib.abc.MetaPathFinder`` keeps ``import labelfix`` from importing ``importlib.abc``
    (13 ms, a window in which Ctrl-C met no labelfix code to end the start-up cleanly).
    """

    def __init__(self, fullname: str, around: Callable[[Callable, ModuleType], None]):
        self.fullname, self.around, self.busy = fullname, around, False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.fullname or self.busy:
            return None
        self.busy = True  # the lookup below must not come back here
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.busy = False
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            try:
                self.around(run, module)
            finally:
                if self in sys.meta_path:
                    sys.meta_path.remove(self)

        spec.loader.exec_module = exec_module
        return spec


def around_import(fullname: str, around: Callable[[Callable, ModuleType], None]) -> bool:
    """Install a hook for ``fullname`` unless it is imported already or hooked; True if so."""
    if fullname in sys.modules or any(
        isinstance(f, ImportHook) and f.fullname == fullname for f in sys.meta_path
    ):
        return False
    sys.meta_path.insert(0, ImportHook(fullname, around))
    return True
