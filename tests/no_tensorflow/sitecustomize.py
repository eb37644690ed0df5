"""On PYTHONPATH, makes `import tensorflow` fail as it does where TensorFlow is not installed:
the path finder finds no module named tensorflow (importlib.util.find_spec returns None, an
import raises ModuleNotFoundError), while every other package imports as usual. Tests run the
PyTorch backend's search this way (tests/conftest.py: no_tensorflow_env)."""

import sys
from importlib.machinery import PathFinder


class _WithoutTensorFlow(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return None
        return PathFinder.find_spec(name, path, target)


sys.meta_path[:] = [_WithoutTensorFlow if f is PathFinder else f for f in sys.meta_path]
