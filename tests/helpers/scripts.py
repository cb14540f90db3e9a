"""Programs shipped in elements (Python without a .py suffix), imported by
the tests that exercise them."""
import importlib.machinery
import importlib.util
from pathlib import Path


def load_script(path: Path, name: str):
    """The program at path as a module called name (the loader is named
    explicitly: there is no .py suffix to go by)."""
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module
