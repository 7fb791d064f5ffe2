"""``python -m pillpipe.benchmarks [bench] [options]`` runs the scenarios; ``... compare [run flags]`` compares."""
from .cli import console

console(f"python -m {__spec__.parent if __spec__ else 'pillpipe.benchmarks'}")
