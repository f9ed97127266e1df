"""The compiled parts of accounting's hot path (issue #20); everything else is in pyproject.toml.

Each extension is optional: where no C compiler is found the install still succeeds and the
module's Python pass runs instead (the service logs which one at start). `bin/setup` installs
gcc where it can, so the demo and the suite run the compiled pass.
"""

from setuptools import Extension, setup

_FLAGS = ["-O2", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"]

setup(ext_modules=[
    Extension("accounting.ingest._readings", ["accounting/ingest/_readings.c"],
              extra_compile_args=_FLAGS, optional=True),
    Extension("accounting.store._line_protocol", ["accounting/store/_line_protocol.c"],
              extra_compile_args=_FLAGS, optional=True),
    Extension("accounting.ingest._columns", ["accounting/ingest/_columns.c"],
              extra_compile_args=_FLAGS, optional=True),
])
