"""Maps the repository's folders onto the `augserve.*` import names.

`server/`, `kernels/` and `clients/` become `augserve.server`, `augserve.kernels`
and `augserve.clients`; every sub-package below them is found, so a new folder
with an `__init__.py` needs no edit here.
"""

from setuptools import find_packages, setup

FOLDERS = {
    "server": "augserve.server",
    "kernels": "augserve.kernels",
    "clients": "augserve.clients",
}

packages: list[str] = []
package_dir: dict[str, str] = {}
for folder, name in FOLDERS.items():
    package_dir[name] = folder
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]

# The C++ source of the int8 ops ships with the package: it is compiled on first use.
package_data = {"augserve.clients": ["py.typed"], "augserve.kernels.quant": ["csrc/*.cpp"]}
setup(packages=packages, package_dir=package_dir, package_data=package_data)
