"""Package discovery only (metadata and dependencies are in setup.cfg).

The repository root is the `dlkdd` package, so every sub-package found under pipeline/ and
models/ installs as `dlkdd.<name>`, and a new sub-package needs no edit here; this file itself
is kept out of the installed package. The bundled sample (`data/sample`, 3.8 MB) ships as
package data, so `dlkdd run` without `--data` works from a wheel as from a clone.
"""
from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

FOUND = find_packages(include=["pipeline", "pipeline.*", "models", "models.*"])


class BuildPy(build_py):
    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if (m[0], m[1]) != ("dlkdd", "setup")]


setup(packages=["dlkdd", *(f"dlkdd.{name}" for name in FOUND)], cmdclass={"build_py": BuildPy},
      package_data={"dlkdd": ["data/sample/*", "data/sample/**/*"]})
