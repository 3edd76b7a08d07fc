"""guests/build.py, loaded once for the tests (it is a script, not a package module)."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("guests_build", ROOT / "guests" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


guests_build = _load()
