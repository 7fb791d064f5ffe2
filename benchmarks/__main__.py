"""``python -m benchmarks`` runs the scenarios; ``python -m benchmarks compare [run flags]`` compares."""
from .cli import console

console()
