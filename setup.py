"""Ships playbooks/, schemas/ and migrations/ inside the package, as reconciler/_data/.

They live at the top of the repository (DESIGN.md); an editable install reads them there,
a built wheel needs copies (see reconciler/bundled.py).
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLED = ("playbooks", "schemas", "migrations")


class BuildPyWithBundledFiles(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in BUNDLED:
            self.copy_tree(name, str(Path(self.build_lib) / "reconciler" / "_data" / name))


setup(cmdclass={"build_py": BuildPyWithBundledFiles})
